package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of /proc/PID/stat times; it is 100 on every Linux
// architecture Go supports.
const clockTicks = 100

// procSample is what the load tool reads of a server process.
type procSample struct {
	cpu float64 // user + system CPU seconds
	rss int64   // resident set size in bytes
}

// sampleProcs sums the samples of several processes (the two servers of the federation
// scenario). A missing process is an error: a server that died must not measure as lean.
func sampleProcs(pids []int) (procSample, error) {
	var s procSample
	for _, pid := range pids {
		p, err := sampleProc(pid)
		if err != nil {
			return s, err
		}
		s.cpu += p.cpu
		s.rss += p.rss
	}
	return s, nil
}

func sampleProc(pid int) (procSample, error) {
	var s procSample
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, fmt.Errorf("load: server process: %w", err)
	}
	// The command name may contain spaces and parentheses; the fields follow its last ')'.
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return s, fmt.Errorf("load: malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(string(stat[i+1:]))
	// Fields after the name start at field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return s, fmt.Errorf("load: short /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	s.cpu = float64(ut+st) / clockTicks
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, fmt.Errorf("load: server process: %w", err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			s.rss = kb * 1024
		}
	}
	return s, nil
}

// loadAverage returns the one-minute load average, recorded with every measurement because
// the machine may be shared.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -1
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}
