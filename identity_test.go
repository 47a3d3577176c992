package chat

// Mutual TLS and certified logins (identity.go), with certificate
// authorities made in memory with crypto/x509, over loopback TCP.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// identityCA is a certificate authority made in memory for one test.
type identityCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool // holding this CA only
}

func identityNewCA(t *testing.T, name string) *identityCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          identitySerial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &identityCA{cert: cert, key: key, pool: pool}
}

// identitySerial returns a random certificate serial number.
func identitySerial(t *testing.T) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// issue returns a certificate signed by the CA for usage; names fills in
// its subject and alternative names.
func (ca *identityCA) issue(t *testing.T, usage x509.ExtKeyUsage, names func(*x509.Certificate)) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: identitySerial(t),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	names(tmpl)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// client issues a client certificate with the common name cn.
func (ca *identityCA) client(t *testing.T, cn string) *tls.Certificate {
	t.Helper()
	return ca.issue(t, x509.ExtKeyUsageClientAuth, func(c *x509.Certificate) { c.Subject.CommonName = cn })
}

// identityServer is a Server behind a TLS listener on 127.0.0.1. Each
// accepted connection is served by ServeConn, whose result goes to ended:
// the test learns why the server ended a connection.
type identityServer struct {
	srv    *Server
	addr   string
	roots  *x509.CertPool // to verify the server's certificate
	ended  chan error
	logins chan string // names logged in, by OnLogin
}

func identityServe(t *testing.T, cfg *tls.Config, roots *x509.CertPool, allow LoginFilter) *identityServer {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	is := &identityServer{addr: l.Addr().String(), roots: roots, ended: make(chan error, 16), logins: make(chan string, 16)}
	is.srv = &Server{
		AllowLogin: allow,
		OnLogin:    func(_ net.Conn, name string) { is.logins <- name },
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return // closed by the cleanup
			}
			wg.Go(func() { is.ended <- is.srv.ServeConn(nc) })
		}
	})
	t.Cleanup(func() {
		l.Close()
		is.srv.Close()
		wg.Wait()
	})
	return is
}

// identityPresent returns a client configuration that presents cert, if
// not nil, whether or not the server names its CA as acceptable (left to
// itself, crypto/tls sends no certificate rather than one from a CA the
// server did not name).
func identityPresent(roots *x509.CertPool, cert *tls.Certificate) *tls.Config {
	return &tls.Config{
		RootCAs:    roots,
		ServerName: "localhost",
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if cert == nil {
				return &tls.Certificate{}, nil // none
			}
			return cert, nil
		},
	}
}

// dial connects a Client presenting cert, if not nil.
func (is *identityServer) dial(t *testing.T, cert *tls.Certificate) *Client {
	t.Helper()
	c, err := Dial(testCtx(t), is.addr, WithTLS(identityPresent(is.roots, cert)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// refused connects with TLS at most version maxVersion presenting cert,
// which the server must refuse: the handshake fails (with TLS 1.3 the
// client learns it on its first read, the server having checked its
// certificate after the client finished), the server ends the connection
// with an error that want accepts, and nobody logs in.
func (is *identityServer) refused(t *testing.T, what string, maxVersion uint16, cert *tls.Certificate, want func(error) bool) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", is.addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(testTimeout))
	cfg := identityPresent(is.roots, cert)
	cfg.MaxVersion = maxVersion
	tc := tls.Client(nc, cfg)
	err = tc.Handshake()
	if err == nil {
		if maxVersion != tls.VersionTLS13 {
			t.Errorf("%s: the TLS 1.2 handshake succeeded", what)
		}
		// The login is sent, the server never reads it.
		if _, err = tc.Write(AppendLogin(nil, "mallory")); err == nil {
			_, err = tc.Read(make([]byte, 64))
		}
	}
	if err == nil || isTimeout(err) || errors.Is(err, io.EOF) {
		t.Errorf("%s: the client saw %v, want a TLS alert", what, err)
	}
	select {
	case err := <-is.ended:
		if !want(err) {
			t.Errorf("%s: the server ended the connection with %v", what, err)
		}
	case <-time.After(testTimeout):
		t.Fatalf("%s: the server never ended the connection", what)
	}
	select {
	case name := <-is.logins:
		t.Errorf("%s: %s logged in", what, name)
	default:
	}
}

// TestMutualTLSCertifiedLogin serves MutualTLSConfig with CertifiedLogin:
// a client logs in only under a name its certificate carries (common name,
// DNS or e-mail alternative name); a client without a certificate, or
// with one from another CA, gets no session at all.
func TestMutualTLSCertifiedLogin(t *testing.T) {
	ca := identityNewCA(t, "chat CA")
	serverCert := ca.issue(t, x509.ExtKeyUsageServerAuth, func(c *x509.Certificate) {
		c.Subject.CommonName = "localhost"
		c.DNSNames = []string{"localhost"}
		c.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	})
	is := identityServe(t, MutualTLSConfig(*serverCert, ca.pool), ca.pool, CertifiedLogin)
	ctx := testCtx(t)
	login := func(c *Client, who, name string, ok bool) {
		t.Helper()
		err := c.Login(ctx, name)
		switch {
		case ok && err != nil:
			t.Errorf("%s logging in as %q: %v", who, name, err)
		case ok:
			if got := <-is.logins; got != name {
				t.Errorf("%s logged in as %q: OnLogin saw %q", who, name, got)
			}
		case !errors.Is(err, ErrFailure):
			t.Errorf("%s logging in as %q: %v, want Failure", who, name, err)
		}
	}
	logout := func(c *Client, who string) {
		t.Helper()
		if err := c.Logout(ctx); err != nil {
			t.Errorf("%s: logout: %v", who, err)
		}
	}

	// A certificate for alice (common name): alice, not bob, not Alice.
	alice := is.dial(t, ca.client(t, "alice"))
	login(alice, "alice's client", "bob", false)
	login(alice, "alice's client", "Alice", false)
	login(alice, "alice's client", "alice", true)

	// A certificate with subject alternative names: each name it carries,
	// and no other.
	bob := is.dial(t, ca.issue(t, x509.ExtKeyUsageClientAuth, func(c *x509.Certificate) {
		c.Subject.CommonName = "Robert"
		c.DNSNames = []string{"bob", "bobby"}
		c.EmailAddresses = []string{"bob@example.org"}
	}))
	for _, name := range []string{"alice", "Bob", "bo", "example.org", "bob@example"} {
		login(bob, "bob's client", name, false)
	}
	for _, name := range []string{"bob", "bobby", "bob@example.org", "Robert"} {
		login(bob, "bob's client", name, true)
		logout(bob, "bob's client")
	}

	// Alternative names only, no common name.
	carol := is.dial(t, ca.issue(t, x509.ExtKeyUsageClientAuth, func(c *x509.Certificate) {
		c.EmailAddresses = []string{"carol@example.org"}
	}))
	login(carol, "carol's client", "carol", false)
	login(carol, "carol's client", "carol@example.org", true)

	// A name certified to two clients is still logged in only once.
	alice2 := is.dial(t, ca.client(t, "alice"))
	login(alice2, "alice's second client", "alice", false)

	// No certificate, or one from another CA: no session, whatever the TLS
	// version.
	other := identityNewCA(t, "another CA")
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		is.refused(t, "no certificate", v, nil, func(err error) bool {
			return err != nil && strings.Contains(err.Error(), "certificate")
		})
		for _, cn := range []string{"mallory", "alice"} {
			is.refused(t, "another CA's certificate for "+cn, v, other.client(t, cn), func(err error) bool {
				var unknown x509.UnknownAuthorityError
				return errors.As(err, &unknown)
			})
		}
	}

	if names, err := alice.List(ctx); err != nil || !slices.Equal(names, []string{"alice", "carol@example.org"}) {
		t.Errorf("list = %q, %v; want alice and carol@example.org", names, err)
	}
	// alice: bob, Alice; bob: 5 names; carol: 1; alice2: 1 name taken.
	st := is.srv.Stats()
	if st.Failures[FailVetoed] != 8 || st.Failures[FailNameTaken] != 1 {
		t.Errorf("failures %v; want 8 vetoed and 1 name_taken", failureDelta(Stats{}, st))
	}
}

// TestCertifiedLoginUnverified serves TLS that asks for a client
// certificate without verifying it: CertifiedLogin lets nobody in, even
// under the name the certificate carries.
func TestCertifiedLoginUnverified(t *testing.T) {
	ca := identityNewCA(t, "chat CA")
	serverCert := ca.issue(t, x509.ExtKeyUsageServerAuth, func(c *x509.Certificate) {
		c.DNSNames = []string{"localhost"}
	})
	cfg := MutualTLSConfig(*serverCert, ca.pool)
	cfg.ClientAuth = tls.RequestClientCert
	refusals := make(chan error, 1)
	is := identityServe(t, cfg, ca.pool, func(conn net.Conn, name string) error {
		if n := len(conn.(*tls.Conn).ConnectionState().PeerCertificates); n != 1 {
			t.Errorf("the client presented %d certificates", n)
		}
		err := CertifiedLogin(conn, name)
		refusals <- err
		return err
	})
	self := identityNewCA(t, "self-made") // not trusted by the server
	c := is.dial(t, self.client(t, "alice"))
	if err := c.Login(testCtx(t), "alice"); !errors.Is(err, ErrFailure) {
		t.Errorf("login with an unverified certificate: %v, want Failure", err)
	}
	if err := <-refusals; !errors.Is(err, ErrNotCertified) {
		t.Errorf("CertifiedLogin: %v, want ErrNotCertified", err)
	}
}

// TestCertifiedLoginBadNames: a verified certificate whose names break
// the name rules certifies none of them; its one valid name logs in.
func TestCertifiedLoginBadNames(t *testing.T) {
	ca := identityNewCA(t, "chat CA")
	serverCert := ca.issue(t, x509.ExtKeyUsageServerAuth, func(c *x509.Certificate) {
		c.DNSNames = []string{"localhost"}
	})
	// Alternative names are ASCII (IA5String); the common name may be any
	// UTF-8.
	bad := []string{"mallory\u200b", "bad name", "x\x1by", strings.Repeat("d", MaxNameLen+1)}
	refusals := make(chan error, len(bad))
	is := identityServe(t, MutualTLSConfig(*serverCert, ca.pool), ca.pool, func(conn net.Conn, name string) error {
		// The server never asks about an invalid name: ask here, on the
		// verified connection, for each name the certificate carries.
		for _, b := range bad {
			refusals <- CertifiedLogin(conn, b)
		}
		return CertifiedLogin(conn, name)
	})
	c := is.dial(t, ca.issue(t, x509.ExtKeyUsageClientAuth, func(c *x509.Certificate) {
		c.Subject.CommonName = bad[0]
		c.DNSNames = bad[1:]
		c.EmailAddresses = []string{"frank@example.org"}
	}))
	ctx := testCtx(t)
	for _, name := range bad {
		if err := c.Login(ctx, name); !errors.Is(err, ErrBadUsername) {
			t.Errorf("login %+q: %v, want Bad username from the client", name, err)
		}
	}
	if err := c.Login(ctx, "frank@example.org"); err != nil {
		t.Fatalf("login frank@example.org: %v", err)
	}
	for _, name := range bad {
		if err := <-refusals; !errors.Is(err, ErrNotCertified) {
			t.Errorf("CertifiedLogin(%+q) = %v, want ErrNotCertified", name, err)
		}
	}
}

func TestCertifiedLoginWithoutTLS(t *testing.T) {
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	if err := CertifiedLogin(s, "alice"); !errors.Is(err, ErrNotCertified) {
		t.Errorf("CertifiedLogin on a pipe: %v, want ErrNotCertified", err)
	}
}

func TestCertificateNames(t *testing.T) {
	for _, c := range []struct {
		what string
		cert x509.Certificate
		want []string
	}{
		{"empty", x509.Certificate{}, nil},
		{"common name", x509.Certificate{Subject: pkix.Name{CommonName: "alice"}}, []string{"alice"}},
		{"DNS names", x509.Certificate{DNSNames: []string{"al", "alice.example"}}, []string{"al", "alice.example"}},
		{"e-mail", x509.Certificate{EmailAddresses: []string{"a@example.org"}}, []string{"a@example.org"}},
		{"all, common name first", x509.Certificate{
			Subject:        pkix.Name{CommonName: "alice", Organization: []string{"not a name"}},
			DNSNames:       []string{"al"},
			EmailAddresses: []string{"a@example.org"},
		}, []string{"alice", "al", "a@example.org"}},
		{"names that break the rules left out", x509.Certificate{
			Subject:        pkix.Name{CommonName: "alice\u200b"},
			DNSNames:       []string{"ａｌｉｃｅ", "bob", "e\u0301ve", "x\u202ey", "a b"},
			EmailAddresses: []string{"a\u00ad@example.org", "carol@example.org", "a-very-long-address@example.org"},
		}, []string{"bob", "carol@example.org"}},
	} {
		if got := certificateNames(&c.cert); !slices.Equal(got, c.want) {
			t.Errorf("%s: certificateNames = %q, want %q", c.what, got, c.want)
		}
	}
}
