package tunnel

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
)

const pinPrefix = "sha256/"

// Pin returns the pin of cert's public key: "sha256/" + base64(SHA-256(SPKI)).
func Pin(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return pinPrefix + base64.StdEncoding.EncodeToString(sum[:])
}

// ParsePin checks that pin has the form Pin produces and returns its digest.
func ParsePin(pin string) ([]byte, error) {
	b64, ok := strings.CutPrefix(pin, pinPrefix)
	if !ok {
		return nil, fmt.Errorf("pin %q does not start with %q", pin, pinPrefix)
	}
	sum, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(sum) != sha256.Size {
		return nil, errors.New("pin is not a base64 SHA-256 digest")
	}
	return sum, nil
}

// GenerateCertificate returns a self-signed ECDSA P-256 certificate for the
// router's tunnel listener, valid for validFor from now. Its identity is its
// key (see Pin); names in it are informational.
func GenerateCertificate(validFor time.Duration) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "ferry-router"},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(validFor),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"ferry-router"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// ServerTLSConfig is the router's TLS configuration for tunnels.
func ServerTLSConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS13,
		NextProtos:   []string{ALPN},
	}
}

// ClientTLSConfig is the bootstrap's TLS configuration: it accepts exactly
// the router whose public key matches pin, and no other, whatever CA signed
// it. Certificate expiry and names are deliberately not checked: the pin
// arrived over the authenticated Lambda API and is the whole identity.
func ClientTLSConfig(pin string) (*tls.Config, error) {
	want, err := ParsePin(pin)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{ALPN},
		InsecureSkipVerify: true, // replaced by the pin check below
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("router presented no certificate")
			}
			got := sha256.Sum256(cs.PeerCertificates[0].RawSubjectPublicKeyInfo)
			if subtle.ConstantTimeCompare(got[:], want) != 1 {
				return errors.New("router certificate does not match pin")
			}
			if cs.NegotiatedProtocol != ALPN {
				return fmt.Errorf("router negotiated protocol %q, want %q", cs.NegotiatedProtocol, ALPN)
			}
			return nil
		},
	}, nil
}
