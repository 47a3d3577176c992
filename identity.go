package chat

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
)

// ErrNotCertified is returned by CertifiedLogin for a login under a name
// that the client's certificate does not carry.
var ErrNotCertified = errors.New("chat: name not certified by the client certificate")

// CertifiedLogin is a LoginFilter for servers that require client
// certificates (mutual TLS): it lets a client log in only under a name its
// verified certificate carries, as its subject common name or as a DNS
// name or e-mail address among its subject alternative names, and only if
// that name is a valid user name (ValidateName): a certificate name that
// breaks the name rules never logs in. Without a verified client
// certificate nobody may log in.
//
//	srv := &chat.Server{AllowLogin: chat.CertifiedLogin}
//	l = tls.NewListener(l, chat.MutualTLSConfig(cert, clientCAs))
func CertifiedLogin(conn net.Conn, name string) error {
	// A *tls.Conn, or a connection that carried TLS (chatws's WebSocket).
	tc, ok := conn.(interface{ ConnectionState() tls.ConnectionState })
	if !ok {
		return fmt.Errorf("%w: not a TLS connection", ErrNotCertified)
	}
	state := tc.ConnectionState()
	if len(state.VerifiedChains) == 0 || len(state.VerifiedChains[0]) == 0 {
		return fmt.Errorf("%w: no verified client certificate", ErrNotCertified)
	}
	if ValidateName(name) != nil {
		return fmt.Errorf("%w: %+q is not a valid user name", ErrNotCertified, name)
	}
	if !slices.Contains(certificateNames(state.VerifiedChains[0][0]), name) {
		return fmt.Errorf("%w: %q", ErrNotCertified, name)
	}
	return nil
}

// certificateNames returns the user names a client certificate vouches
// for: those of its subject common name and its DNS and e-mail subject
// alternative names that are valid user names (ValidateName), in that
// order.
func certificateNames(cert *x509.Certificate) []string {
	var names []string
	if ValidateName(cert.Subject.CommonName) == nil {
		names = append(names, cert.Subject.CommonName)
	}
	for _, list := range [][]string{cert.DNSNames, cert.EmailAddresses} {
		for _, name := range list {
			if ValidateName(name) == nil {
				names = append(names, name)
			}
		}
	}
	return names
}

// MutualTLSConfig returns a server TLS configuration that presents cert and
// requires every client to present a certificate signed by one of the
// authorities in clientCAs. Use it with CertifiedLogin.
func MutualTLSConfig(cert tls.Certificate, clientCAs *x509.CertPool) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clientCAs,
		MinVersion:   tls.VersionTLS12,
	}
}
