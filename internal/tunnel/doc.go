// Package tunnel implements ferry's tunnel protocol v1: the connection a
// Lambda invocation dials back to the router, over which the router sends it
// HTTP requests.
//
// A tunnel is TCP + TLS 1.3 with ALPN "ferry/1". The dialer (the bootstrap)
// trusts the router by the SHA-256 pin of its public key, which reaches it in
// the invoke payload over the authenticated Lambda API; no CA is involved.
// Before any HTTP, the dialer sends one length-prefixed [Hello] carrying a
// single-use token minted by the router ([Issuer]); the router answers with an
// accept or a reject-with-reason and closes on reject.
//
// After the handshake the roles reverse: the router is the HTTP/2 client
// ([Conn], built on http2.Transport.NewClientConn) and the bootstrap the
// HTTP/2 server ([Session], built on http2.Server.ServeConn). This package
// writes no framing of its own.
//
// A stream the bootstrap will not run is nacked: refused before the app sees
// it, with REFUSED_STREAM or a 503 carrying the Ferry-Nack header. [Unprocessed]
// tells the router side when a failed round trip is safe to retry elsewhere.
package tunnel
