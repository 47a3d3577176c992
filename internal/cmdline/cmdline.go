// Package cmdline holds what the example programs' command lines share.
package cmdline

import (
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// Parse parses args with fs, whose usage text is head followed by the
// flags' defaults. It prints nothing for a bad flag, whose error the
// program reports in its own words, and prints the usage on standard error
// for -h (returning flag.ErrHelp).
func Parse(fs *flag.FlagSet, head string, args []string) error {
	fs.Usage = func() {
		io.WriteString(fs.Output(), head)
		fs.PrintDefaults()
	}
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(os.Stderr)
		fs.Usage()
	}
	return err
}

// LoadCertPool reads the PEM certificates in file into a new pool.
func LoadCertPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate found", file)
	}
	return pool, nil
}
