package xmlstream

import "bytes"

// scanner finds where a top-level element ends before anything is parsed, so the parser always
// works on complete, contiguous input and never has to suspend mid-token. Its state survives
// between reads, which keeps the cost linear however the input is split (a client trickling one
// byte per packet must not make the server rescan the stanza each time).
//
// For well-formed input the scanner's view of the markup is exact: '>' inside a tag only occurs
// in quoted values, '<' never occurs in text, and CDATA sections end at the first "]]>". For
// malformed input it stops early where it can see a problem (a '<' inside a tag or a value,
// markup that is neither a tag nor CDATA) and leaves the diagnosis to the parser.
type scanner struct {
	active bool
	header bool // stop after the first start tag: the stream root stays open
	st     uint8
	q      byte // the quote that opened the current attribute value
	k      int  // bytes of cdataOpen matched so far
	i      int  // next byte to look at, relative to the start of the element
	depth  int
	// Counts that size the parser's allocations: start tags, quoted values and text runs.
	elems, attrs, texts int
}

const (
	scLT       = iota // just after '<'
	scText            // character data between tags
	scStartTag        // inside a start tag, outside quotes
	scQuote           // inside a quoted attribute value
	scEndTag          // inside an end tag
	scBang            // after "<!", matching "[CDATA["
	scCDATA           // inside a CDATA section
)

const cdataOpen = "<![CDATA["

// tagStop marks the bytes that matter inside a start tag outside quotes.
var tagStop = [256]bool{'>': true, '"': true, '\'': true, '<': true}

// begin starts scanning an element whose '<' is the first byte of the data passed to scan.
func (s *scanner) begin(header bool) {
	*s = scanner{active: true, header: header, st: scLT, i: 1}
}

// scan continues over data, which holds the element from its '<' on. It returns the length of
// the element (or of the prefix the parser must examine to report an error) once known, and 0
// when more input is needed.
func (s *scanner) scan(data []byte) int {
	i, n := s.i, len(data)
	for i < n {
		switch s.st {
		case scText:
			j := bytes.IndexByte(data[i:], '<')
			if j < 0 {
				s.texts++ // a run continued by the next read is counted twice: an estimate
				i = n
				continue
			}
			if j > 0 {
				s.texts++
			}
			i += j + 1
			s.st = scLT
		case scLT:
			switch data[i] {
			case '/':
				s.st = scEndTag
				i++
			case '!':
				s.st = scBang
				s.k = 2
				i++
			case '?':
				return i + 1
			default:
				s.st = scStartTag
				s.elems++
			}
		case scBang:
			for s.k < len(cdataOpen) && i < n {
				if data[i] != cdataOpen[s.k] {
					return i + 1
				}
				s.k++
				i++
			}
			if s.k == len(cdataOpen) {
				if s.depth == 0 {
					return i
				}
				s.st = scCDATA
			}
		case scStartTag:
			for i+4 <= n && !(tagStop[data[i]] || tagStop[data[i+1]] || tagStop[data[i+2]] || tagStop[data[i+3]]) {
				i += 4
			}
			for i < n && !tagStop[data[i]] {
				i++
			}
			if i == n {
				break
			}
			switch c := data[i]; c {
			case '>':
				empty := data[i-1] == '/'
				i++
				if !empty {
					s.depth++
					if s.header {
						return i
					}
				} else if s.depth == 0 {
					return i
				}
				s.st = scText
			case '"', '\'':
				s.q = c
				s.st = scQuote
				s.attrs++
				i++
			default: // '<'
				return i + 1
			}
		case scQuote:
			// Two vectorized searches beat a byte loop even on short values.
			j := bytes.IndexByte(data[i:], s.q)
			if j < 0 {
				j = n - i
			}
			if k := bytes.IndexByte(data[i:i+j], '<'); k >= 0 {
				return i + k + 1
			}
			i += j
			if i == n {
				break
			}
			i++
			s.st = scStartTag
		case scEndTag:
			for i < n {
				c := data[i]
				i++
				if c == '>' {
					s.depth--
					if s.depth <= 0 {
						return i
					}
					s.st = scText
					break
				}
				if c == '<' {
					return i
				}
			}
		case scCDATA:
			j := bytes.Index(data[i:], []byte("]]>"))
			if j < 0 {
				// Keep the last two bytes: they may begin the terminator.
				i = max(i, n-2)
				s.i = i
				return 0
			}
			i += j + 3
			s.st = scText
			s.texts++
		}
	}
	s.i = i
	return 0
}
