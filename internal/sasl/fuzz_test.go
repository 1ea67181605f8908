package sasl

import (
	"context"
	"crypto/tls"
	"testing"
)

func FuzzPlain(f *testing.F) {
	for _, seed := range []string{
		"\x00tim\x00tanstaaftanstaaf",
		"Ursel\x00Kurt\x00xipj3plmq",
		"\x00tim@example.org\x00tanstaaftanstaaf",
		"\x00\x00",
		"\x00a b\x00\xff",
		"",
	} {
		f.Add([]byte(seed), false)
	}
	store := clearStore("tim", "tanstaaftanstaaf", "kurt", "xipj3plmq")
	f.Fuzz(func(t *testing.T, msg []byte, challengeFirst bool) {
		n, err := NewServer(Plain, Config{Domain: "example.org", Store: store, AllowPlainWithoutTLS: true})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if challengeFirst {
			if _, _, err := n.Step(ctx, nil); err != nil {
				t.Fatal(err)
			}
		}
		_, done, err := n.Step(ctx, msg)
		if done != (err == nil) || done != (n.Username() != "") {
			t.Fatalf("inconsistent result: done=%v err=%v user=%q", done, err, n.Username())
		}
		n.Step(ctx, msg)
	})
}

func FuzzDigestMD5(f *testing.F) {
	const nonce = "servernonce"
	f.Add([]byte(digestResponse("juliet", "example.org", "pw", nonce, "cn", "00000001", "xmpp/example.org", "")), []byte(nil))
	f.Add([]byte(digestResponse("juliet", "example.org", "pw", nonce, "cn", "00000001", "xmpp/example.org", "a@b")), []byte("x"))
	f.Add([]byte(`username="a\"b",realm=,nonce="servernonce",,nc=00000001`), []byte(nil))
	f.Add([]byte(`charset=utf-8,username="chris",realm="elwood.innosoft.com",nonce="OA6MG9tEQGm2hh",nc=00000001,cnonce="OA6MHXh6VqTrRk",digest-uri="imap/elwood.innosoft.com",response=d388dad90d4bbd760a152321f2143af7,qop=auth`), []byte(nil))
	f.Add([]byte(`a="`), []byte(nil))
	store := clearStore("juliet", "pw")
	f.Fuzz(func(t *testing.T, response, final []byte) {
		n, err := NewServer(DigestMD5, Config{Domain: "example.org", Store: store, nonce: fixedNonce(nonce)})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if _, _, err := n.Step(ctx, nil); err != nil {
			t.Fatal(err)
		}
		if _, _, err := n.Step(ctx, response); err != nil {
			return
		}
		_, done, err := n.Step(ctx, final)
		if done != (err == nil) || done != (n.Username() != "") {
			t.Fatalf("inconsistent result: done=%v err=%v user=%q", done, err, n.Username())
		}
	})
}

func FuzzSCRAM(f *testing.F) {
	// The server nonce is fixed so the fuzzer can reach the proof check:
	// the combined nonce is the client nonce followed by "srv".
	f.Add([]byte("n,,n=user,r=abc"), []byte("c=biws,r=abcsrv,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="), false)
	f.Add([]byte("y,a=x=2Cy,n=us=3Der,r=abc,ext=1"), []byte("c=eSxhPXg9MkN5LA==,r=abcsrv,x=1,p=AAAA"), false)
	f.Add([]byte("p=tls-exporter,,n=user,r=abc"), []byte("c=cD10bHMtZXhwb3J0ZXIsLGJpbmQ=,r=abcsrv,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="), true)
	f.Add([]byte("p=tls-server-end-point,,n=user,r=abc"), []byte(""), true)
	f.Add([]byte("n,,m=x,n=user,r=abc"), []byte("c=,r=,p="), false)
	f.Add([]byte("n,,n=,r="), []byte(",,,"), false)
	store := clearStore("user", "pencil")
	tlsState := &tls.ConnectionState{Version: tls.VersionTLS13, HandshakeComplete: true}
	bind := func(string) ([]byte, error) { return []byte("bind"), nil }
	f.Fuzz(func(t *testing.T, first, final []byte, plus bool) {
		mech := ScramSHA256
		cfg := Config{Domain: "example.org", Store: store, nonce: fixedNonce("srv"), PlusAdvertised: plus}
		if plus {
			mech = ScramSHA256Plus
			cfg.TLS, cfg.ChannelBinding = tlsState, bind
		}
		n, err := NewServer(mech, cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if _, _, err := n.Step(ctx, first); err != nil {
			if n.Username() != "" {
				t.Fatal("Username set after failure")
			}
			return
		}
		_, done, err := n.Step(ctx, final)
		if done != (err == nil) || done != (n.Username() != "") {
			t.Fatalf("inconsistent result: done=%v err=%v user=%q", done, err, n.Username())
		}
	})
}
