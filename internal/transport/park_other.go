//go:build !linux

package transport

import "errors"

// poller is not available here: streams keep a goroutine waiting in each read.
type poller struct{}

func newPoller() (*poller, error) { return nil, errors.New("transport: no poller on this system") }

func (p *poller) add(fd int, gen uint32) error        { return errors.New("transport: no poller") }
func (p *poller) remove(fd int)                       {}
func (p *poller) wait(ready func(fd int, gen uint32)) {}
