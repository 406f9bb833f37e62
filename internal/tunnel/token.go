package tunnel

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"sync"
	"time"

	"github.com/ferryrun/ferry/internal/lambdaarn"
)

// Token errors. Each names why a hello was rejected; none carries the token.
var (
	ErrTokenMalformed = errors.New("token malformed")
	ErrTokenSignature = errors.New("token not signed for this function")
	ErrTokenExpired   = errors.New("token expired")
	ErrTokenReused    = errors.New("token already used")
)

const (
	tokenIDLen  = 16
	tokenMACLen = sha256.Size
	tokenRawLen = tokenIDLen + 8 + tokenMACLen
	// MinSecretLen is the shortest signing secret an Issuer accepts.
	MinSecretLen = 32
)

// Claims is what a redeemed token proves.
type Claims struct {
	ID       string // hex, unique per token; correlates a tunnel with its invoke
	Function string // function name the token was minted for
	Expires  time.Time
}

// Issuer mints and redeems single-use tunnel tokens.
//
// A token is id(16) | expiry(8, unix ms) | HMAC-SHA256(secret, id|expiry|function),
// base64url. The function name is inside the MAC but not the token, so a
// token only verifies for the function it was minted for. Any router holding
// the secret can verify a token; single use is enforced by the redeeming
// Issuer, which remembers redeemed ids until they expire.
type Issuer struct {
	// static after construction
	secret []byte
	ttl    time.Duration
	now    func() time.Time

	mu   sync.Mutex
	used map[string]time.Time // guarded by mu; token id -> expiry
}

// NewIssuer returns an Issuer signing with secret (at least MinSecretLen
// bytes). Tokens live for ttl; if ttl is zero they live 10 seconds. If now is
// nil, time.Now is used.
func NewIssuer(secret []byte, ttl time.Duration, now func() time.Time) (*Issuer, error) {
	if len(secret) < MinSecretLen {
		return nil, errors.New("token secret shorter than 32 bytes")
	}
	if ttl <= 0 {
		ttl = 10 * time.Second
	}
	if now == nil {
		now = time.Now
	}
	return &Issuer{secret: append([]byte(nil), secret...), ttl: ttl, now: now, used: map[string]time.Time{}}, nil
}

// Mint returns a new token for function (a name or ARN) and its claims.
func (i *Issuer) Mint(function string) (string, Claims, error) {
	raw := make([]byte, tokenRawLen)
	if _, err := rand.Read(raw[:tokenIDLen]); err != nil {
		return "", Claims{}, err
	}
	exp := i.now().Add(i.ttl).Truncate(time.Millisecond)
	binary.BigEndian.PutUint64(raw[tokenIDLen:], uint64(exp.UnixMilli()))
	name := lambdaarn.FunctionName(function)
	copy(raw[tokenIDLen+8:], i.mac(raw[:tokenIDLen+8], name))
	c := Claims{ID: hex.EncodeToString(raw[:tokenIDLen]), Function: name, Expires: exp}
	return base64.RawURLEncoding.EncodeToString(raw), c, nil
}

// Redeem verifies token for function (a name or ARN) and marks it used.
// It fails with one of the ErrToken* errors.
func (i *Issuer) Redeem(token, function string) (Claims, error) {
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(raw) != tokenRawLen {
		return Claims{}, ErrTokenMalformed
	}
	name := lambdaarn.FunctionName(function)
	if !hmac.Equal(raw[tokenIDLen+8:], i.mac(raw[:tokenIDLen+8], name)) {
		// Forged, or minted for another function: the MAC cannot tell which.
		return Claims{}, ErrTokenSignature
	}
	exp := time.UnixMilli(int64(binary.BigEndian.Uint64(raw[tokenIDLen:])))
	now := i.now()
	if !now.Before(exp) {
		return Claims{}, ErrTokenExpired
	}
	id := hex.EncodeToString(raw[:tokenIDLen])

	i.mu.Lock()
	defer i.mu.Unlock()
	for k, e := range i.used {
		if !now.Before(e) {
			delete(i.used, k) // expired tokens fail on expiry alone
		}
	}
	if _, ok := i.used[id]; ok {
		return Claims{}, ErrTokenReused
	}
	i.used[id] = exp
	return Claims{ID: id, Function: name, Expires: exp}, nil
}

func (i *Issuer) mac(idExp []byte, function string) []byte {
	m := hmac.New(sha256.New, i.secret)
	m.Write(idExp)
	m.Write([]byte(function))
	return m.Sum(nil)
}
