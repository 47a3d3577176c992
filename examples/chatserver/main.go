// Command chatserver runs a chat server.
//
//	go run ./examples/chatserver [flags]
//
// With no flags it serves plain TCP on 127.0.0.1:9000 and logs to standard
// error. SIGINT or SIGTERM shut it down gracefully: replies already owed are
// sent, then the connections are closed, and it exits with status 0.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/seedchat/chat"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/term"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "chatserver:", err)
		os.Exit(1)
	}
}

type config struct {
	addr            string
	logLevel        string
	logFormat       string
	tlsCert, tlsKey string
	maxConns        int
	maxFrameSize    int
	queueSize       int
	writeTimeout    time.Duration
	shutdownTimeout time.Duration
	pprofAddr       string
}

func parseFlags(args []string) (*config, error) {
	var c config
	fs := flag.NewFlagSet("chatserver", flag.ContinueOnError)
	fs.StringVar(&c.addr, "addr", chat.DefaultAddr, "listen on `HOST:PORT`")
	fs.StringVar(&c.logLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "", "log `format`: console or json (default console when standard error is a terminal, json otherwise)")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "serve TLS with the certificate in `FILE` (PEM; needs -tls-key)")
	fs.StringVar(&c.tlsKey, "tls-key", "", "the private key of -tls-cert, in `FILE` (PEM)")
	fs.IntVar(&c.maxConns, "max-conns", 0, "the most connections served at once (0: no limit)")
	fs.IntVar(&c.maxFrameSize, "max-frame-size", chat.DefaultMaxFrameSize, "the largest frame body in `BYTES`")
	fs.IntVar(&c.queueSize, "queue-size", chat.DefaultQueueSize, "`BYTES` queued for one client before messages to it get Failure")
	fs.DurationVar(&c.writeTimeout, "write-timeout", chat.DefaultWriteTimeout, "drop a client whose writes make no progress for this long")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 10*time.Second, "the longest a graceful shutdown waits before closing what is left")
	fs.StringVar(&c.pprofAddr, "pprof-addr", "", "serve net/http/pprof on `HOST:PORT` (off when empty)")
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(os.Stderr)
			fs.Usage()
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return nil, errors.New("-tls-cert and -tls-key go together")
	}
	if c.maxConns < 0 || c.maxFrameSize < 0 || c.queueSize < 0 {
		return nil, errors.New("-max-conns, -max-frame-size and -queue-size cannot be negative")
	}
	return &c, nil
}

func newLogger(level, format string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	if format == "" {
		format = "json"
		if term.IsTerminal(int(os.Stderr.Fd())) {
			format = "console"
		}
	}
	var enc zapcore.Encoder
	switch format {
	case "json":
		enc = zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	case "console":
		cfg := zap.NewDevelopmentEncoderConfig()
		cfg.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
		enc = zapcore.NewConsoleEncoder(cfg)
	default:
		return nil, fmt.Errorf("-log-format: unknown format %q (console or json)", format)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.Lock(os.Stderr), lvl)), nil
}

func run(args []string) error {
	cfg, err := parseFlags(args)
	if err != nil {
		return err
	}
	log, err := newLogger(cfg.logLevel, cfg.logFormat)
	if err != nil {
		return err
	}
	defer log.Sync()

	l, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return err
	}
	if cfg.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.tlsCert, cfg.tlsKey)
		if err != nil {
			l.Close()
			return fmt.Errorf("loading the TLS certificate: %w", err)
		}
		l = tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}

	srv := &chat.Server{
		Logger:       log,
		MaxConns:     cfg.maxConns,
		MaxFrameSize: cfg.maxFrameSize,
		QueueSize:    cfg.queueSize,
		WriteTimeout: cfg.writeTimeout,
	}
	if cfg.pprofAddr != "" {
		stop, err := servePprof(cfg.pprofAddr, log)
		if err != nil {
			l.Close()
			return err
		}
		defer stop()
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	log.Info("listening", zap.Stringer("addr", l.Addr()), zap.Bool("tls", cfg.tlsCert != ""))

	select {
	case err := <-served:
		return err // the listener failed
	case <-ctx.Done():
	}
	stop() // a second signal kills at once
	log.Info("shutting down", zap.Duration("timeout", cfg.shutdownTimeout))
	sctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown timed out; connections closed", zap.Error(err))
	}
	<-served
	log.Info("stopped")
	return nil
}

// servePprof serves net/http/pprof on addr until stop is called.
func servePprof(addr string, log *zap.Logger) (stop func(), err error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-pprof-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(l)
	log.Info("pprof listening", zap.Stringer("addr", l.Addr()))
	return func() { hs.Close() }, nil
}
