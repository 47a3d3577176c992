package cmdline

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// testCA is a self-signed certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newCA(t *testing.T, name string) *testCA {
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
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
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

func TestLoadCertPool(t *testing.T) {
	ca, other := newCA(t, "chat CA"), newCA(t, "another CA")
	certPEM := func(ca *testCA) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
	}
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}

	pool, err := LoadCertPool(write("ca.pem", certPEM(ca)))
	if err != nil {
		t.Fatal(err)
	}
	if !pool.Equal(ca.pool) {
		t.Error("the pool loaded is not the CA's")
	}

	// Two certificates, with text around them as openssl writes it.
	both := slices.Concat([]byte("subject=CN = chat CA\n"), certPEM(ca), []byte("\n"), certPEM(other))
	pool, err = LoadCertPool(write("both.pem", both))
	if err != nil {
		t.Fatal(err)
	}
	want := ca.pool.Clone()
	want.AddCert(other.cert)
	if !pool.Equal(want) {
		t.Error("the pool loaded from two certificates holds something else")
	}

	if _, err := LoadCertPool(filepath.Join(dir, "missing.pem")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing file: %v, want ErrNotExist", err)
	}
	key, err := x509.MarshalECPrivateKey(ca.key)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"empty.pem": nil,
		"text.pem":  []byte("not a certificate\n"),
		"key.pem":   pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: key}),
		"der.crt":   ca.cert.Raw,
	} {
		path := write(name, data)
		if pool, err := LoadCertPool(path); err == nil || pool != nil {
			t.Errorf("%s: loaded (%v), want an error", name, err)
		} else if !strings.Contains(err.Error(), path) {
			t.Errorf("%s: the error %q does not name the file", name, err)
		}
	}
}
