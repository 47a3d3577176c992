package chat

import "sync/atomic"

// The frame kinds counted, in and out.
const (
	inLogin = iota
	inList
	inSendTo
	inLogout
	inMalformed
	numIn
)

const (
	outResponse = iota
	outNames
	outMessage
	numOut
)

var (
	inTypes  = [inMalformed]FrameType{TypeLogin, TypeList, TypeSendTo, TypeLogout}
	outTypes = [numOut]FrameType{TypeResponse, TypeNames, TypeMessage}
)

// counters are the running totals of one connection, or of all the closed
// connections of a server. Each connection has its own so that busy
// connections on different cores do not contend for one cache line.
type counters struct {
	framesIn  [numIn]atomic.Uint64
	framesOut [numOut]atomic.Uint64
	failures  [numFailureReasons]atomic.Uint64
	bytesIn   atomic.Uint64
	bytesOut  atomic.Uint64
	relayed   atomic.Uint64
}

func (c *counters) addTo(dst *counters) {
	for i := range c.framesIn {
		dst.framesIn[i].Add(c.framesIn[i].Load())
	}
	for i := range c.framesOut {
		dst.framesOut[i].Add(c.framesOut[i].Load())
	}
	for i := range c.failures {
		dst.failures[i].Add(c.failures[i].Load())
	}
	dst.bytesIn.Add(c.bytesIn.Load())
	dst.bytesOut.Add(c.bytesOut.Load())
	dst.relayed.Add(c.relayed.Load())
}

// Stats is a snapshot of a Server's counters and gauges, from Server.Stats.
// Counters run from the server's start.
type Stats struct {
	Conns int // connections open now
	Users int // users logged in through this server now

	ConnsAccepted  uint64 // connections served, in all
	ConnsRefused   uint64 // connections closed at once: MaxConns or MaxConnsPerIP
	SlowConsumers  uint64 // connections dropped because their writes made no progress
	FloodsDropped  uint64 // connections closed for flooding past the rate limit
	TimedOut       uint64 // connections closed by LoginTimeout or FrameTimeout
	FramesTooLarge uint64 // connections closed after a length beyond MaxFrameSize

	// FramesIn counts the frames received by type: TypeLogin, TypeList,
	// TypeSendTo and TypeLogout. Malformed counts those that could not be
	// parsed, and frames of the server's types sent to it.
	FramesIn  map[FrameType]uint64
	Malformed uint64
	// FramesOut counts the frames queued for clients by type:
	// TypeResponse, TypeNames and TypeMessage. A frame queued is not
	// necessarily written: what is queued for a connection dropped as a
	// slow consumer, or closed at once, is discarded.
	FramesOut map[FrameType]uint64
	// Failures counts the requests answered Failure, by reason.
	Failures map[FailureReason]uint64

	Relayed  uint64 // messages queued for their recipient
	BytesIn  uint64 // bytes read from clients
	BytesOut uint64 // bytes written to clients
}

// serverCounters are the server-wide events, rare enough for one set.
type serverCounters struct {
	accepted, refused atomic.Uint64
	ended             [numEndedCounts]atomic.Uint64 // by ending.count
	users             atomic.Int64
}

// Stats returns a snapshot of the server's counters and gauges. It is safe
// to call at any time, from any goroutine.
func (s *Server) Stats() Stats {
	var total counters
	s.mu.Lock()
	s.closed.addTo(&total)
	for c := range s.conns {
		c.stats.addTo(&total)
	}
	conns := len(s.conns)
	s.mu.Unlock()

	st := Stats{
		Conns:          conns,
		Users:          int(s.events.users.Load()),
		ConnsAccepted:  s.events.accepted.Load(),
		ConnsRefused:   s.events.refused.Load(),
		SlowConsumers:  s.events.ended[endedSlow].Load(),
		FloodsDropped:  s.events.ended[endedFlooding].Load(),
		TimedOut:       s.events.ended[endedTimedOut].Load(),
		FramesTooLarge: s.events.ended[endedTooLarge].Load(),
		FramesIn:       make(map[FrameType]uint64, len(inTypes)),
		Malformed:      total.framesIn[inMalformed].Load(),
		FramesOut:      make(map[FrameType]uint64, numOut),
		Failures:       make(map[FailureReason]uint64, numFailureReasons),
		Relayed:        total.relayed.Load(),
		BytesIn:        total.bytesIn.Load(),
		BytesOut:       total.bytesOut.Load(),
	}
	for i, t := range inTypes {
		st.FramesIn[t] = total.framesIn[i].Load()
	}
	for i, t := range outTypes {
		st.FramesOut[t] = total.framesOut[i].Load()
	}
	for r := range FailureReason(numFailureReasons) {
		st.Failures[r] = total.failures[r].Load()
	}
	return st
}
