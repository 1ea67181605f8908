package main

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"impetus/internal/stanza"
	"impetus/internal/xmlstream"
)

// dialOptions is how one client connects and logs in.
type dialOptions struct {
	addr     string // host:port of the client listener
	domain   string
	password string
	tls      bool   // STARTTLS before authenticating
	mech     string // SCRAM-SHA-1 or PLAIN
	presence bool   // send initial presence after binding
	roster   bool   // request the roster before initial presence, as a client that wants subscriptions does
	sources  []net.IP
	timeout  time.Duration // bound on the whole login
}

// sourceCounter spreads connections over the configured source addresses: one address has
// about 28,000 ephemeral ports towards one server port.
var sourceCounter atomic.Uint64

// client is one logged-in XMPP client stream.
type client struct {
	nc  net.Conn
	dec *xmlstream.Decoder
	jid string

	wmu sync.Mutex
	buf []byte
}

// clientLimits are generous: the load tool trusts the server it measures.
var clientLimits = xmlstream.Limits{MaxStanzaSize: 1 << 20}

const streamHeader = "<?xml version='1.0'?><stream:stream to='%s' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"

// login connects as user and returns a bound client.
func login(ctx context.Context, o *dialOptions, user, resource string) (*client, error) {
	d := net.Dialer{Timeout: o.timeout}
	if len(o.sources) > 0 {
		src := o.sources[sourceCounter.Add(1)%uint64(len(o.sources))]
		d.LocalAddr = &net.TCPAddr{IP: src}
	}
	nc, err := d.DialContext(ctx, "tcp", o.addr)
	if err != nil {
		return nil, fmt.Errorf("load: dial: %w", err)
	}
	c := &client{nc: nc, dec: xmlstream.NewDecoder(nc, clientLimits)}
	_ = nc.SetDeadline(time.Now().Add(o.timeout))
	if err := c.negotiate(o, user, resource); err != nil {
		nc.Close()
		return nil, err
	}
	_ = c.nc.SetDeadline(time.Time{})
	return c, nil
}

func (c *client) writeRaw(s string) error {
	_, err := c.nc.Write([]byte(s))
	return err
}

// openStream sends a stream header and reads the server's header and features.
func (c *client) openStream(domain string) (*stanza.Element, error) {
	if err := c.writeRaw(fmt.Sprintf(streamHeader, domain)); err != nil {
		return nil, err
	}
	if _, err := c.dec.ReadHeader(); err != nil {
		return nil, fmt.Errorf("load: stream header: %w", err)
	}
	f, err := c.dec.ReadElement()
	if err != nil {
		return nil, fmt.Errorf("load: stream features: %w", err)
	}
	if f.Local != "features" {
		return nil, fmt.Errorf("load: expected stream features, got %s", f.String())
	}
	return f, nil
}

func (c *client) negotiate(o *dialOptions, user, resource string) error {
	f, err := c.openStream(o.domain)
	if err != nil {
		return err
	}
	if o.tls {
		if f.Child(stanza.NSTLS, "starttls") == nil {
			return errors.New("load: server offers no STARTTLS")
		}
		if err := c.writeRaw("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"); err != nil {
			return err
		}
		p, err := c.dec.ReadElement()
		if err != nil {
			return err
		}
		if p.Local != "proceed" {
			return fmt.Errorf("load: STARTTLS refused: %s", p.String())
		}
		// The load tool measures servers with self-signed certificates on loopback.
		tc := tls.Client(c.nc, &tls.Config{InsecureSkipVerify: true, ServerName: o.domain})
		if err := tc.Handshake(); err != nil {
			return fmt.Errorf("load: TLS handshake: %w", err)
		}
		c.nc = tc
		c.dec.Reset(tc)
		if f, err = c.openStream(o.domain); err != nil {
			return err
		}
	}
	if err := c.authenticate(o, f, user); err != nil {
		return err
	}
	c.dec.Restart()
	if f, err = c.openStream(o.domain); err != nil {
		return err
	}
	res := "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>" + resource + "</resource></bind></iq>"
	if err := c.writeRaw(res); err != nil {
		return err
	}
	r, err := c.dec.ReadElement()
	if err != nil {
		return err
	}
	b := r.Child(stanza.NSBind, "bind")
	if r.Attr("type") != "result" || b == nil || b.Child(stanza.NSBind, "jid") == nil {
		return fmt.Errorf("load: bind failed: %s", r.String())
	}
	c.jid = b.Child(stanza.NSBind, "jid").Text()
	// Legacy session establishment only when the server says it is required.
	if s := f.Child(stanza.NSSession, "session"); s != nil && s.Child(stanza.NSSession, "optional") == nil {
		if err := c.writeRaw("<iq type='set' id='sess1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>"); err != nil {
			return err
		}
		if r, err = c.dec.ReadElement(); err != nil {
			return err
		}
		if r.Attr("type") != "result" {
			return fmt.Errorf("load: session failed: %s", r.String())
		}
	}
	if o.roster {
		// Servers send subscription requests and roster pushes only to resources that asked
		// for the roster (RFC 6121 §2.1.6); the reply is read and ignored by the scenario.
		if err := c.writeRaw("<iq type='get' id='roster1'><query xmlns='jabber:iq:roster'/></iq>"); err != nil {
			return err
		}
	}
	if o.presence {
		return c.writeRaw("<presence/>")
	}
	return nil
}

func (c *client) authenticate(o *dialOptions, f *stanza.Element, user string) error {
	mechs := f.Child(stanza.NSSASL, "mechanisms")
	if mechs == nil {
		return errors.New("load: server offers no SASL")
	}
	offered := false
	for m := range mechs.Elements() {
		if m.Text() == o.mech {
			offered = true
		}
	}
	if !offered {
		return fmt.Errorf("load: server does not offer %s: %s", o.mech, mechs.String())
	}
	switch o.mech {
	case "PLAIN":
		msg := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + o.password))
		if err := c.writeRaw("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" + msg + "</auth>"); err != nil {
			return err
		}
		r, err := c.dec.ReadElement()
		if err != nil {
			return err
		}
		if r.Local != "success" {
			return fmt.Errorf("load: PLAIN failed: %s", r.String())
		}
		return nil
	case "SCRAM-SHA-1":
		return c.scram(user, o.password)
	}
	return fmt.Errorf("load: unknown mechanism %s", o.mech)
}

// scram runs SCRAM-SHA-1 without channel binding (RFC 5802).
func (c *client) scram(user, password string) error {
	var nb [18]byte
	_, _ = rand.Read(nb[:])
	cnonce := hex.EncodeToString(nb[:])
	bare := "n=" + user + ",r=" + cnonce
	if err := c.writeRaw("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>" +
		base64.StdEncoding.EncodeToString([]byte("n,,"+bare)) + "</auth>"); err != nil {
		return err
	}
	ch, err := c.dec.ReadElement()
	if err != nil {
		return err
	}
	if ch.Local != "challenge" {
		return fmt.Errorf("load: SCRAM: %s", ch.String())
	}
	first, err := base64.StdEncoding.DecodeString(strings.TrimSpace(ch.Text()))
	if err != nil {
		return fmt.Errorf("load: SCRAM challenge: %w", err)
	}
	var nonce, salt64 string
	iter := 0
	for _, kv := range strings.Split(string(first), ",") {
		if len(kv) < 2 || kv[1] != '=' {
			continue
		}
		switch kv[0] {
		case 'r':
			nonce = kv[2:]
		case 's':
			salt64 = kv[2:]
		case 'i':
			iter, _ = strconv.Atoi(kv[2:])
		}
	}
	salt, err := base64.StdEncoding.DecodeString(salt64)
	if err != nil || !strings.HasPrefix(nonce, cnonce) || iter <= 0 {
		return fmt.Errorf("load: SCRAM: bad server-first-message %q", first)
	}
	scramIterations.Store(int64(iter))
	salted, err := saltedPassword(password, salt, iter)
	if err != nil {
		return err
	}
	clientKey := hmacSHA1(salted, "Client Key")
	h := sha1.Sum(clientKey)
	final := "c=biws,r=" + nonce
	authMsg := bare + "," + string(first) + "," + final
	sig := hmacSHA1(h[:], authMsg)
	proof := make([]byte, len(clientKey))
	for i := range proof {
		proof[i] = clientKey[i] ^ sig[i]
	}
	final += ",p=" + base64.StdEncoding.EncodeToString(proof)
	if err := c.writeRaw("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" + base64.StdEncoding.EncodeToString([]byte(final)) + "</response>"); err != nil {
		return err
	}
	r, err := c.dec.ReadElement()
	if err != nil {
		return err
	}
	if r.Local != "success" {
		return fmt.Errorf("load: SCRAM failed: %s", r.String())
	}
	// Check the server's signature: a server that skipped it would measure as faster.
	v, err := base64.StdEncoding.DecodeString(strings.TrimSpace(r.Text()))
	if err != nil {
		return fmt.Errorf("load: SCRAM success: %w", err)
	}
	want := "v=" + base64.StdEncoding.EncodeToString(hmacSHA1(hmacSHA1(salted, "Server Key"), authMsg))
	if string(v) != want {
		return errors.New("load: SCRAM: wrong server signature")
	}
	return nil
}

// scramIterations is the iteration count the server last asked for, reported with the result
// so that runs against different servers are seen to use the same count.
var scramIterations atomic.Int64

// saltedCache holds SaltedPassword by password, salt and iteration count, as a real client
// keeps it (RFC 5802 §5.1): a server that stores SCRAM keys sends the same salt every time,
// and the load tool should not spend its CPU repeating the derivation.
var saltedCache sync.Map

func saltedPassword(password string, salt []byte, iter int) ([]byte, error) {
	key := password + "\x00" + string(salt) + "\x00" + strconv.Itoa(iter)
	if v, ok := saltedCache.Load(key); ok {
		return v.([]byte), nil
	}
	k, err := pbkdf2.Key(sha1.New, password, salt, iter, sha1.Size)
	if err != nil {
		return nil, err
	}
	saltedCache.Store(key, k)
	return k, nil
}

func hmacSHA1(key []byte, msg string) []byte {
	m := hmac.New(sha1.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// send writes s; safe from several goroutines.
func (c *client) send(s []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.nc.Write(s)
	return err
}

// close ends the stream without waiting for the server's answer.
func (c *client) close() {
	_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = c.nc.Write([]byte("</stream:stream>"))
	c.nc.Close()
}
