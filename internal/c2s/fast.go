package c2s

// XEP-0484 Fast Authentication Streamlining Tokens. A client that authenticated with SASL2
// asks for a token (<request-token/>) bound to one Hashed Token mechanism; later it
// authenticates in one round trip with that token (<fast/>). Tokens are kept per account and
// per client (the SASL2 user-agent id) in two slots, as the XEP's implementation notes
// suggest: "new" holds the latest issued token until the client uses it, which moves it to
// "current" and so retires the older one; a token can be rotated without ever leaving the
// client without a working one.

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"time"
	"unicode/utf8"

	"mellium.im/xmpp/jid"

	"impetus/internal/sasl"
	"impetus/internal/stanza"
	"impetus/internal/storage"
)

// FASTStore is the storage.Map holding FAST tokens: user bare JID → user-agent id → record.
const FASTStore = "fast"

// maxUserAgentID bounds the client-chosen user-agent id used as a storage key.
const maxUserAgentID = 256

// fastSlot is one stored token.
type fastSlot struct {
	Token  string    `json:"token"`
	Mech   string    `json:"mech"`
	Expiry time.Time `json:"expiry"`
}

// fastRecord is what is stored per account and client.
type fastRecord struct {
	Current *fastSlot `json:"current,omitempty"`
	New     *fastSlot `json:"new,omitempty"`
}

// fastMatch is the token a FAST authentication used.
type fastMatch struct {
	mech       string
	expiry     time.Time
	invalidate bool
}

// fastStore returns the token store of the stream's host, or nil when it has no storage.
func (s *Session) fastStore() storage.Map {
	if s.cfg.Core == nil {
		return nil
	}
	h := s.cfg.Core.Host(s.domain)
	if h == nil || h.Storage == nil {
		return nil
	}
	return h.Storage.Map(FASTStore)
}

func validUserAgentID(id string) bool {
	if id == "" || len(id) > maxUserAgentID || !utf8.ValidString(id) {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] == 0 {
			return false
		}
	}
	return true
}

// fastAuthenticate checks a token authentication (XEP-0484 §4.4): the initial response carries
// the username and the Hashed Token proof, which must match a live token issued to this client
// for this very mechanism.
func (s *Session) fastAuthenticate(ctx context.Context, a *sasl2Auth, fe *stanza.Element, resp []byte) (bool, error) {
	if resp == nil {
		return false, s.sasl2Failure(&sasl.Failure{Condition: "malformed-request", Text: "a token authentication needs an initial response"}, a.mech, "")
	}
	user, proof, f := sasl.ParseHTInitial(resp)
	if f != nil {
		return false, s.sasl2Failure(f, a.mech, "")
	}
	if s.throttled(user) {
		return false, s.sasl2Throttled(a.mech, user)
	}
	bare, err := jid.New(user, s.domain, "")
	if err != nil || !validUserAgentID(a.uaID) {
		return false, s.sasl2Failure(&sasl.Failure{Condition: "not-authorized", Credentials: true}, a.mech, user)
	}
	var cb []byte
	if t, _ := sasl.HTChannelBinding(a.mech); t != "" {
		if cb, err = s.channelBinding()(t); err != nil {
			return false, s.sasl2Failure(&sasl.Failure{Condition: "not-authorized", Text: "channel binding unavailable"}, a.mech, user)
		}
	}
	invalidate := fe.Attr("invalidate") == "true" || fe.Attr("invalidate") == "1"
	var match *fastSlot
	expired := false
	now := time.Now()
	err = s.fastStore().Update(ctx, bare.String(), func(tx storage.MapTx) error {
		rec, err := loadFAST(tx, a.uaID)
		if err != nil || rec == nil {
			return err
		}
		check := func(sl *fastSlot) bool {
			if sl == nil || sl.Mech != a.mech || !sasl.HTVerify(a.mech, []byte(sl.Token), cb, proof) {
				return false
			}
			if !now.Before(sl.Expiry) {
				expired = true
				return false
			}
			return true
		}
		switch {
		case check(rec.New):
			// The client has the newest token: the one it replaces is retired (§4.5).
			match = rec.New
			rec.Current, rec.New = rec.New, nil
		case check(rec.Current):
			match = rec.Current
		default:
			return nil
		}
		if invalidate {
			return tx.Delete(a.uaID)
		}
		return storeFAST(tx, a.uaID, rec)
	})
	if err != nil {
		s.log.Error("token store failed", "err", err)
		return false, s.sasl2Failure(&sasl.Failure{Condition: "temporary-auth-failure"}, a.mech, user)
	}
	if match == nil {
		f := &sasl.Failure{Condition: "not-authorized", Credentials: true}
		if expired {
			// §5.2: a token the server no longer trusts fails with credentials-expired.
			f = &sasl.Failure{Condition: "credentials-expired", Credentials: true}
		}
		s.recordFailure(f, user)
		return false, s.sasl2Failure(f, a.mech, user)
	}
	a.fast = &fastMatch{mech: a.mech, expiry: match.Expiry, invalidate: invalidate}
	a.success.AddChild(stanza.NewElement(NSSASL2, "additional-data").AddText(
		base64.StdEncoding.EncodeToString(sasl.HTProof(a.mech, []byte(match.Token), "Responder", cb))))
	return s.sasl2Authenticated(a, user, "")
}

// fastIssue issues a token when the client asked for one or its token is due for rotation
// (in the second half of its life), and returns the <token/> element for <success/>.
func (s *Session) fastIssue(ctx context.Context, a *sasl2Auth) *stanza.Element {
	mech := ""
	if rt := a.req.Child(NSFAST, "request-token"); rt != nil {
		if m := rt.Attr("mechanism"); slices.Contains(s.fastMechanisms(), m) {
			mech = m
		}
	}
	lifetime := s.cfg.SASL2.FASTLifetime
	if mech == "" && a.fast != nil && !a.fast.invalidate && time.Until(a.fast.expiry) < lifetime/2 {
		mech = a.fast.mech
	}
	if mech == "" || !validUserAgentID(a.uaID) || s.fastStore() == nil {
		return nil
	}
	var b [32]byte
	_, _ = rand.Read(b[:])
	slot := &fastSlot{Token: base64.RawURLEncoding.EncodeToString(b[:]), Mech: mech, Expiry: time.Now().Add(lifetime).UTC().Truncate(time.Second)}
	err := s.fastStore().Update(ctx, s.jid.Bare().String(), func(tx storage.MapTx) error {
		rec, err := loadFAST(tx, a.uaID)
		if err != nil {
			return err
		}
		if rec == nil {
			rec = &fastRecord{}
		}
		// An earlier token that was never used is replaced (§4.5).
		rec.New = slot
		return storeFAST(tx, a.uaID, rec)
	})
	if err != nil {
		s.log.Error("token not stored", "err", err)
		return nil
	}
	return stanza.NewElement(NSFAST, "token",
		stanza.Attr{Name: "expiry", Value: slot.Expiry.Format(time.RFC3339)},
		stanza.Attr{Name: "token", Value: slot.Token})
}

func loadFAST(tx storage.MapTx, key string) (*fastRecord, error) {
	data, err := tx.Get(key)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rec fastRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		// A damaged record authenticates nobody; the next issued token replaces it.
		return &fastRecord{}, nil
	}
	return &rec, nil
}

func storeFAST(tx storage.MapTx, key string, rec *fastRecord) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return tx.Set(key, data)
}
