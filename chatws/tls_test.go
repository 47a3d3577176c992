package chatws

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/seedchat/chat"
)

// testCA issues certificates for the test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "chatws test CA"},
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
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue returns a certificate for cn, for a server (with IP 127.0.0.1) or a client.
func (ca *testCA) issue(t *testing.T, cn string, server bool) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestCertifiedLoginOverWSS checks that over wss with client certificates
// chat.CertifiedLogin sees the browser's certificate: a login only under a
// name it carries.
func TestCertifiedLoginOverWSS(t *testing.T) {
	ca := newTestCA(t)
	srv := &chat.Server{AllowLogin: chat.CertifiedLogin}
	h := &Handler{Server: srv}
	hs := httptest.NewUnstartedServer(h)
	hs.TLS = chat.MutualTLSConfig(ca.issue(t, "server", true), ca.pool)
	hs.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake below
	hs.StartTLS()
	t.Cleanup(func() {
		srv.Close()
		h.Wait()
		hs.Close()
	})
	url := "wss" + strings.TrimPrefix(hs.URL, "https") + "/ws"
	alice := ca.issue(t, "alice", false)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs:      ca.pool,
		Certificates: []tls.Certificate{alice},
	}}}
	defer client.CloseIdleConnections()

	c := dial(t, url, &websocket.DialOptions{HTTPClient: client})
	c.do(chat.AppendLogin(nil, "bob"), chat.ResultFailure) // not on the certificate
	c.do(chat.AppendLogin(nil, "alice"), chat.ResultOK)

	// Without a certificate, the TLS handshake itself fails.
	ctx := testCtx(t)
	anonymous := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool}}}
	defer anonymous.CloseIdleConnections()
	if ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: anonymous}); err == nil {
		ws.CloseNow()
		t.Error("a client without a certificate was accepted")
	}
}
