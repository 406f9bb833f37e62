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
	// ErrTokenOtherIssuer: the token is genuine but another router process
	// minted it (another replica, or this one before a restart). Tunnels
	// return to the process that invoked them; its single-use record is
	// the only one, so nobody else may take the token.
	ErrTokenOtherIssuer = errors.New("token minted by another router process")
)

const (
	tokenIDLen     = 16
	tokenIssuerLen = 8
	tokenMACLen    = sha256.Size
	tokenSignedLen = tokenIDLen + 8 + tokenIssuerLen
	tokenRawLen    = tokenSignedLen + tokenMACLen
	// sweepEvery bounds how often Redeem forgets expired token ids.
	sweepEvery = time.Second
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
// A token is id(16) | expiry(8, unix ms) | issuer(8) |
// HMAC-SHA256(secret, id|expiry|issuer|function), base64url. The function
// name is inside the MAC but not the token, so a token only verifies for
// the function it was minted for. The issuer is random per Issuer: only
// the Issuer that minted a token redeems it, so its memory of redeemed ids
// is the whole single-use record, even where replicas share the secret
// and after a restart.
type Issuer struct {
	// static after construction
	secret []byte
	self   [tokenIssuerLen]byte
	ttl    time.Duration
	now    func() time.Time

	mu        sync.Mutex
	used      map[string]time.Time // guarded by mu; token id -> expiry
	lastSweep time.Time            // guarded by mu
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
	i := &Issuer{secret: append([]byte(nil), secret...), ttl: ttl, now: now, used: map[string]time.Time{}}
	if _, err := rand.Read(i.self[:]); err != nil {
		return nil, err
	}
	return i, nil
}

// Mint returns a new token for function (a name or ARN) and its claims.
func (i *Issuer) Mint(function string) (string, Claims, error) {
	raw := make([]byte, tokenRawLen)
	if _, err := rand.Read(raw[:tokenIDLen]); err != nil {
		return "", Claims{}, err
	}
	exp := i.now().Add(i.ttl).Truncate(time.Millisecond)
	binary.BigEndian.PutUint64(raw[tokenIDLen:], uint64(exp.UnixMilli()))
	copy(raw[tokenIDLen+8:], i.self[:])
	name := lambdaarn.FunctionName(function)
	copy(raw[tokenSignedLen:], i.mac(raw[:tokenSignedLen], name))
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
	if !hmac.Equal(raw[tokenSignedLen:], i.mac(raw[:tokenSignedLen], name)) {
		// Forged, or minted for another function: the MAC cannot tell which.
		return Claims{}, ErrTokenSignature
	}
	if !hmac.Equal(raw[tokenIDLen+8:tokenSignedLen], i.self[:]) {
		return Claims{}, ErrTokenOtherIssuer
	}
	exp := time.UnixMilli(int64(binary.BigEndian.Uint64(raw[tokenIDLen:])))
	now := i.now()
	if !now.Before(exp) {
		return Claims{}, ErrTokenExpired
	}
	id := hex.EncodeToString(raw[:tokenIDLen])

	i.mu.Lock()
	defer i.mu.Unlock()
	if now.Sub(i.lastSweep) >= sweepEvery {
		// Expired tokens fail on expiry alone: forget them, at most once
		// a second rather than on every redeem.
		i.lastSweep = now
		for k, e := range i.used {
			if !now.Before(e) {
				delete(i.used, k)
			}
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
