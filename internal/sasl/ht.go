package sasl

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"hash"
	"strings"
)

// The Hashed Token mechanisms (draft-schmaus-kitten-sasl-ht) that XEP-0484 FAST uses: one round
// trip, the client proving possession of a server-issued token with HMAC(token, "Initiator" ||
// channel-binding data), the server answering with HMAC(token, "Responder" || data).

// HTMechanisms lists the Hashed Token mechanisms this server implements, by channel binding:
// ENDP tls-server-end-point, EXPR tls-exporter, UNIQ tls-unique, NONE none.
var HTMechanisms = []string{
	"HT-SHA-256-ENDP", "HT-SHA-256-EXPR", "HT-SHA-256-UNIQ", "HT-SHA-256-NONE",
	"HT-SHA-512-ENDP", "HT-SHA-512-EXPR", "HT-SHA-512-UNIQ", "HT-SHA-512-NONE",
}

// htParts splits an HT mechanism name into its hash and channel-binding type ("" for NONE).
func htParts(mech string) (func() hash.Hash, string, bool) {
	rest, ok := strings.CutPrefix(mech, "HT-")
	if !ok {
		return nil, "", false
	}
	var h func() hash.Hash
	switch {
	case strings.HasPrefix(rest, "SHA-256-"):
		h, rest = sha256.New, rest[len("SHA-256-"):]
	case strings.HasPrefix(rest, "SHA-512-"):
		h, rest = sha512.New, rest[len("SHA-512-"):]
	default:
		return nil, "", false
	}
	switch rest {
	case "ENDP":
		return h, TLSServerEndPoint, true
	case "EXPR":
		return h, TLSExporter, true
	case "UNIQ":
		return h, TLSUnique, true
	case "NONE":
		return h, "", true
	}
	return nil, "", false
}

// HTChannelBinding returns the channel-binding type an HT mechanism needs ("" for NONE) and
// whether mech is an HT mechanism at all.
func HTChannelBinding(mech string) (string, bool) {
	_, cb, ok := htParts(mech)
	return cb, ok
}

// HTUsable lists the HT mechanisms a connection can serve: NONE always, the others when its
// TLS state offers their channel binding (cbTypes, from ChannelBindingTypes).
func HTUsable(cbTypes []string) []string {
	var out []string
	for _, m := range HTMechanisms {
		cb, _ := HTChannelBinding(m)
		if cb == "" {
			out = append(out, m)
			continue
		}
		for _, t := range cbTypes {
			if t == cb {
				out = append(out, m)
			}
		}
	}
	return out
}

// HTProof computes the initiator's ("Initiator") or responder's ("Responder") message of mech
// for token over channel-binding data cb.
func HTProof(mech string, token []byte, role string, cb []byte) []byte {
	h, _, ok := htParts(mech)
	if !ok {
		return nil
	}
	m := hmac.New(h, token)
	m.Write([]byte(role))
	m.Write(cb)
	return m.Sum(nil)
}

// ParseHTInitial splits the client's initial response, authcid NUL initiator-hashed-token.
func ParseHTInitial(msg []byte) (user string, proof []byte, f *Failure) {
	i := bytes.IndexByte(msg, 0)
	if i <= 0 || i == len(msg)-1 {
		return "", nil, fail(MalformedRequest, "expected authcid NUL hashed token")
	}
	return string(msg[:i]), msg[i+1:], nil
}

// HTVerify reports, in constant time, whether proof is the initiator message of mech for token.
func HTVerify(mech string, token, cb, proof []byte) bool {
	want := HTProof(mech, token, "Initiator", cb)
	return want != nil && hmac.Equal(want, proof)
}
