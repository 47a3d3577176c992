package chat

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// testCA is a certificate authority made in memory for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
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
	return &testCA{cert: cert, key: key, pool: pool}
}

var serial int64 = 100

// issue returns a certificate signed by the CA; edit fills in its names.
func (ca *testCA) issue(t *testing.T, usage x509.ExtKeyUsage, edit func(*x509.Certificate)) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	edit(tmpl)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func TestMutualTLSLogins(t *testing.T) {
	ca := newTestCA(t, "chat CA")
	serverCert := ca.issue(t, x509.ExtKeyUsageServerAuth, func(c *x509.Certificate) {
		c.Subject.CommonName = "localhost"
		c.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	})
	l, err := tls.Listen("tcp", "127.0.0.1:0", MutualTLSConfig(serverCert, ca.pool))
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{AllowLogin: CertifiedLogin}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	defer func() {
		srv.Close()
		<-served
	}()

	dial := func(certs ...tls.Certificate) (*Client, error) {
		return Dial(testCtx(t), l.Addr().String(), WithTLS(&tls.Config{
			RootCAs:      ca.pool,
			Certificates: certs,
		}))
	}
	client := func(cert tls.Certificate) *Client {
		c, err := dial(cert)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	ctx := testCtx(t)

	// The common name.
	alice := client(ca.issue(t, x509.ExtKeyUsageClientAuth, func(c *x509.Certificate) { c.Subject.CommonName = "alice" }))
	if err := alice.Login(ctx, "bob"); !errors.Is(err, ErrFailure) {
		t.Errorf("alice logging in as bob: %v, want ErrFailure", err)
	}
	if err := alice.Login(ctx, "alice"); err != nil {
		t.Errorf("alice logging in as alice: %v", err)
	}

	// DNS and e-mail subject alternative names, and several names.
	bob := client(ca.issue(t, x509.ExtKeyUsageClientAuth, func(c *x509.Certificate) {
		c.Subject.CommonName = "Robert"
		c.DNSNames = []string{"bob"}
		c.EmailAddresses = []string{"bob@example.org"}
	}))
	for _, name := range []string{"alice", "Bob", "bo"} {
		if err := bob.Login(ctx, name); !errors.Is(err, ErrFailure) {
			t.Errorf("bob logging in as %q: %v, want ErrFailure", name, err)
		}
	}
	if err := bob.Login(ctx, "bob@example.org"); err != nil {
		t.Errorf("bob logging in by e-mail: %v", err)
	}
	bob.Logout(ctx)
	if err := bob.Login(ctx, "bob"); err != nil {
		t.Errorf("bob logging in by DNS name: %v", err)
	}
	bob.Logout(ctx)
	if err := bob.Login(ctx, "Robert"); err != nil {
		t.Errorf("bob logging in by common name: %v", err)
	}

	// Without a certificate, or with one from another CA, no session.
	other := newTestCA(t, "another CA")
	for what, certs := range map[string][]tls.Certificate{
		"no certificate":       nil,
		"another CA's mallory": {other.issue(t, x509.ExtKeyUsageClientAuth, func(c *x509.Certificate) { c.Subject.CommonName = "mallory" })},
	} {
		c, err := dial(certs...)
		if err == nil {
			// TLS 1.3 reports the refusal on the first read or write.
			err = c.Login(ctx, "mallory")
			c.Close()
		}
		if err == nil {
			t.Errorf("%s: logged in", what)
		}
	}

	if names, err := alice.List(ctx); err != nil || !slices.Equal(names, []string{"Robert", "alice"}) {
		t.Errorf("List = %q, %v", names, err)
	}
}

func TestCertifiedLoginWithoutTLS(t *testing.T) {
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	if err := CertifiedLogin(s, "alice"); !errors.Is(err, ErrNotCertified) {
		t.Errorf("CertifiedLogin on a pipe: %v", err)
	}
}

func TestCertificateNames(t *testing.T) {
	cert := &x509.Certificate{
		Subject:        pkix.Name{CommonName: "alice"},
		DNSNames:       []string{"al", "alice.example"},
		EmailAddresses: []string{"a@example.org"},
	}
	if got := CertificateNames(cert); !slices.Equal(got, []string{"alice", "al", "alice.example", "a@example.org"}) {
		t.Errorf("CertificateNames = %q", got)
	}
	if got := CertificateNames(&x509.Certificate{}); len(got) != 0 {
		t.Errorf("CertificateNames of an empty certificate = %q", got)
	}
}

func TestLoadCertPool(t *testing.T) {
	ca := newTestCA(t, "chat CA")
	dir := t.TempDir()
	good := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(good, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool, err := LoadCertPool(good)
	if err != nil {
		t.Fatal(err)
	}
	if !pool.Equal(ca.pool) {
		t.Error("the pool loaded is not the CA's")
	}
	if _, err := LoadCertPool(filepath.Join(dir, "missing.pem")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing file: %v", err)
	}
	junk := filepath.Join(dir, "junk.pem")
	os.WriteFile(junk, []byte("not a certificate\n"), 0o600)
	if _, err := LoadCertPool(junk); err == nil {
		t.Error("a file without certificates loaded")
	}
}
