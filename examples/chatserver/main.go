// Command chatserver runs a chat server.
//
//	go run ./examples/chatserver [flags]
//
// With no flags it serves plain TCP on 127.0.0.1:9000 and logs to standard
// error. SIGINT or SIGTERM shut it down gracefully: replies already owed are
// sent, then the connections are closed, and it exits with status 0.
//
// With -http-addr it also serves the chat to browsers: the web client at /,
// the WebSocket at /ws and /healthz, over https and wss with the TLS flags.
//
// With -nats it joins a cluster of chat servers through that NATS server
// (with JetStream): users connected to any of them chat as on one server.
// See package github.com/seedchat/chat/cluster.
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
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/term"

	"github.com/seedchat/chat"
	"github.com/seedchat/chat/chatprom"
	"github.com/seedchat/chat/chatws"
	"github.com/seedchat/chat/cluster"
	"github.com/seedchat/chat/internal/cmdline"
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
	tlsClientCA     string
	maxConns        int
	maxConnsPerIP   int
	loginTimeout    time.Duration
	frameTimeout    time.Duration
	rateLimit       float64
	rateBurst       int
	floodLimit      int
	metricsAddr     string
	httpAddr        string
	allowedOrigins  string
	maxFrameSize    int
	queueSize       int
	writeTimeout    time.Duration
	shutdownTimeout time.Duration
	pprofAddr       string
	natsURL         string
	natsCreds       string
	nodeName        string
	deadAfter       time.Duration
	natsReplicas    int
}

// usageHead is the start of the -h output, before the flags.
const usageHead = `usage: chatserver [flags]
chatserver runs a chat server, relaying messages between its clients.

It serves plain TCP on 127.0.0.1:9000 unless told otherwise, and logs to
standard error. With -nats it joins a cluster of chat servers: users
connected to any of them chat as on one server. SIGINT or SIGTERM shut
it down gracefully: the replies owed are sent, the connections closed,
and it exits with status 0.

Flags:
`

func parseFlags(args []string) (*config, error) {
	var c config
	fs := flag.NewFlagSet("chatserver", flag.ContinueOnError)
	fs.StringVar(&c.addr, "addr", chat.DefaultAddr, "listen on `HOST:PORT`")
	fs.StringVar(&c.logLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "", "log `format`: console or json (default console when standard error is a terminal, json otherwise)")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "serve TLS with the certificate in `FILE` (PEM; needs -tls-key)")
	fs.StringVar(&c.tlsKey, "tls-key", "", "the private key of -tls-cert, in `FILE` (PEM)")
	fs.StringVar(&c.tlsClientCA, "tls-client-ca", "", "require client certificates signed by the CA in `FILE` (PEM), and accept a login only under a name the certificate carries (needs -tls-cert)")
	fs.IntVar(&c.maxConns, "max-conns", 0, "the most connections served at once (0: no limit)")
	fs.IntVar(&c.maxConnsPerIP, "max-conns-per-ip", 0, "the most connections served at once from one IP address (0: no limit)")
	fs.DurationVar(&c.loginTimeout, "login-timeout", 0, "close a connection not logged in for this long (0: never)")
	fs.DurationVar(&c.frameTimeout, "frame-timeout", chat.DefaultFrameTimeout, "close a connection whose frame stays incomplete this long (negative: never)")
	fs.Float64Var(&c.rateLimit, "rate-limit", 0, "requests per second allowed per connection on average; more get Failure (0: no limit)")
	fs.IntVar(&c.rateBurst, "rate-burst", 0, "the largest burst of requests -rate-limit allows (0: one second's worth)")
	fs.IntVar(&c.floodLimit, "flood-limit", chat.DefaultFloodLimit, "close a connection after this many rate-limited requests in a row")
	fs.StringVar(&c.metricsAddr, "metrics-addr", "", "serve Prometheus metrics at /metrics and /healthz on `HOST:PORT` (off when empty)")
	fs.StringVar(&c.httpAddr, "http-addr", "", "serve the web client at / and the chat over WebSocket at /ws on `HOST:PORT`, with /healthz (off when empty; https and wss with -tls-cert)")
	fs.StringVar(&c.allowedOrigins, "allowed-origins", "", "comma-separated `HOSTS` of other origins whose pages may open the WebSocket (path.Match patterns such as *.example.com; default: the page's own origin only)")
	fs.IntVar(&c.maxFrameSize, "max-frame-size", chat.DefaultMaxFrameSize, "the largest frame body in `BYTES`")
	fs.IntVar(&c.queueSize, "queue-size", chat.DefaultQueueSize, "`BYTES` queued for one client before messages to it get Failure")
	fs.DurationVar(&c.writeTimeout, "write-timeout", chat.DefaultWriteTimeout, "drop a client whose writes make no progress for this long")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 10*time.Second, "the longest a graceful shutdown waits before closing what is left")
	fs.StringVar(&c.pprofAddr, "pprof-addr", "", "serve net/http/pprof on `HOST:PORT` (off when empty)")
	fs.StringVar(&c.natsURL, "nats", "", "join a cluster of chat servers through the NATS server (with JetStream) at `URL` (comma-separated for several)")
	fs.StringVar(&c.natsCreds, "nats-creds", "", "authenticate to NATS with the credentials in `FILE`")
	fs.StringVar(&c.nodeName, "node-name", "", "this server's `NAME` in the cluster, unique in it (default: host name and listening port)")
	fs.DurationVar(&c.deadAfter, "node-dead-after", cluster.DefaultDeadAfter, "free the names of a cluster node whose lease has not been renewed for this long; a node that cannot renew its own for 8/10 of it disconnects its users")
	fs.IntVar(&c.natsReplicas, "nats-replicas", 1, "the copies JetStream keeps of the cluster's table of users, when the first node creates it (3 for a cluster of three NATS servers)")
	if err := cmdline.Parse(fs, usageHead, args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return nil, errors.New("-tls-cert and -tls-key go together")
	}
	if c.tlsClientCA != "" && c.tlsCert == "" {
		return nil, errors.New("-tls-client-ca needs -tls-cert and -tls-key")
	}
	if c.allowedOrigins != "" && c.httpAddr == "" {
		return nil, errors.New("-allowed-origins needs -http-addr")
	}
	if c.natsURL == "" && (c.natsCreds != "" || c.nodeName != "") {
		return nil, errors.New("-nats-creds and -node-name need -nats")
	}
	if c.natsReplicas < 1 {
		return nil, errors.New("-nats-replicas must be at least 1")
	}
	if c.deadAfter <= 0 {
		return nil, errors.New("-node-dead-after must be positive")
	}
	if c.maxConns < 0 || c.maxConnsPerIP < 0 || c.maxFrameSize < 0 || c.queueSize < 0 || c.rateLimit < 0 || c.rateBurst < 0 || c.floodLimit < 0 {
		return nil, errors.New("limits cannot be negative")
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
	defer l.Close()
	srv := &chat.Server{
		Logger:        log,
		MaxConns:      cfg.maxConns,
		MaxConnsPerIP: cfg.maxConnsPerIP,
		MaxFrameSize:  cfg.maxFrameSize,
		QueueSize:     cfg.queueSize,
		WriteTimeout:  cfg.writeTimeout,
		LoginTimeout:  cfg.loginTimeout,
		FrameTimeout:  cfg.frameTimeout,
		RateLimit:     cfg.rateLimit,
		RateBurst:     cfg.rateBurst,
		FloodLimit:    cfg.floodLimit,
	}
	if cfg.natsURL != "" {
		dir, err := joinCluster(cfg, l.Addr(), log)
		if err != nil {
			return err
		}
		defer dir.Close() // after Shutdown has logged the users out
		srv.Directory = dir
	}
	var tlsCfg *tls.Config
	if cfg.tlsCert != "" {
		tlsCfg, err = serverTLS(cfg)
		if err != nil {
			return err
		}
		if cfg.tlsClientCA != "" {
			srv.AllowLogin = chat.CertifiedLogin
		}
		l = tls.NewListener(l, tlsCfg)
	}
	if cfg.httpAddr != "" {
		ws := &chatws.Handler{Server: srv, OriginPatterns: splitList(cfg.allowedOrigins), Logger: log.Named("ws")}
		stop, err := serveWeb(cfg.httpAddr, tlsCfg, ws, log)
		if err != nil {
			return fmt.Errorf("-http-addr: %w", err)
		}
		defer ws.Wait() // after Shutdown: the WebSockets get their close frames
		defer stop()
	}
	if cfg.pprofAddr != "" {
		stop, err := serveHTTP(cfg.pprofAddr, pprofHandler(), log, "pprof")
		if err != nil {
			return fmt.Errorf("-pprof-addr: %w", err)
		}
		defer stop()
	}
	if cfg.metricsAddr != "" {
		stop, err := serveHTTP(cfg.metricsAddr, metricsHandler(srv), log, "metrics")
		if err != nil {
			return fmt.Errorf("-metrics-addr: %w", err)
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

// joinCluster opens the cluster's Directory. The node is named after the
// host and the port the server listens on unless -node-name names it.
func joinCluster(cfg *config, addr net.Addr, log *zap.Logger) (*cluster.Directory, error) {
	name := cfg.nodeName
	if name == "" {
		name = cluster.HostNode(addr.(*net.TCPAddr).Port)
	}
	ccfg := cluster.Config{Node: name, DeadAfter: cfg.deadAfter, Replicas: cfg.natsReplicas, Logger: log.Named("cluster")}
	if cfg.natsCreds != "" {
		ccfg.Options = append(ccfg.Options, nats.UserCredentials(cfg.natsCreds))
	}
	// Open waits for JetStream to elect the bucket's leader (a fresh NATS
	// cluster on a loaded machine can take tens of seconds) and, after a
	// restart under the same node name, for the previous run's lease to go
	// unrenewed for -node-dead-after.
	ctx, cancel := context.WithTimeout(context.Background(), 2*cfg.deadAfter+time.Minute)
	defer cancel()
	dir, err := cluster.Open(ctx, cfg.natsURL, ccfg)
	if err != nil {
		return nil, fmt.Errorf("-nats: %w", err)
	}
	return dir, nil
}

// serverTLS loads the server's certificate and, for mutual TLS, the
// authority that signs client certificates.
func serverTLS(cfg *config) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(cfg.tlsCert, cfg.tlsKey)
	if err != nil {
		return nil, fmt.Errorf("loading the TLS certificate: %w", err)
	}
	if cfg.tlsClientCA == "" {
		return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
	}
	pool, err := cmdline.LoadCertPool(cfg.tlsClientCA)
	if err != nil {
		return nil, fmt.Errorf("-tls-client-ca: %w", err)
	}
	return chat.MutualTLSConfig(cert, pool), nil
}

func pprofHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

func metricsHandler(srv *chat.Server) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		chatprom.NewCollector(srv),
		chatprom.NewBuildInfoCollector(),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	if dir, ok := srv.Directory.(*cluster.Directory); ok {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "chat_cluster_fenced_total",
			Help: "Times this cluster node could not renew its lease in time and disconnected its users.",
		}, func() float64 { return float64(dir.Fenced()) }))
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	return mux
}

// serveWeb serves the web client, the WebSocket and /healthz on addr, with
// TLS if tlsCfg is not nil, until stop is called. /metrics stays on
// -metrics-addr, which can listen on a private address.
func serveWeb(addr string, tlsCfg *tls.Config, ws *chatws.Handler, log *zap.Logger) (stop func(), err error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	if tlsCfg != nil {
		l = tls.NewListener(l, tlsCfg)
	}
	mux := http.NewServeMux()
	mux.Handle("/", chatws.Page())
	mux.Handle("/ws", ws)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: zap.NewStdLog(log.Named("http"))}
	go hs.Serve(l)
	scheme := "http"
	if tlsCfg != nil {
		scheme = "https"
	}
	log.Info("web listening", zap.String("url", scheme+"://"+l.Addr().String()+"/"))
	return func() { hs.Close() }, nil
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// serveHTTP serves h on addr until stop is called.
func serveHTTP(addr string, h http.Handler, log *zap.Logger, what string) (stop func(), err error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(l)
	log.Info(what+" listening", zap.Stringer("addr", l.Addr()))
	return func() { hs.Close() }, nil
}
