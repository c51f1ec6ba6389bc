package lb

import "sync"

// maxIdleWorkers bounds the goroutines kept waiting for work after their
// session ended.
const maxIdleWorkers = 256

// task is a new client connection to handle (first, when set, is the
// backend policy chose for it; tried lists backends that failed it
// already), or the client-to-backend direction of session s.
type task struct {
	l      *LB
	client *sock
	first  *Backend
	tried  []*Backend
	s      *session
}

func (t task) do() {
	if t.s != nil {
		t.l.copy(t.s, &t.s.up)
		t.l.release(t.s)
		return
	}
	t.l.handle(t.client, t.first, t.tried)
}

// workerPool runs tasks on goroutines that outlive one session: a new
// connection is handed to a waiting goroutine whose stack has already
// grown to what a session needs, instead of a new goroutine that starts
// small and copies its stack as the dial goes deep. Each idle worker waits
// on its own channel (a plain receive, cheaper than a select).
type workerPool struct {
	mu      sync.Mutex
	idle    []chan task // protected by mu
	stopped bool        // protected by mu
}

// run hands t to an idle worker, or starts one.
func (p *workerPool) run(t task) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		ch := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		ch <- t // buffered: never blocks
		return
	}
	p.mu.Unlock()
	go p.worker(t)
}

func (p *workerPool) worker(t task) {
	var ch chan task
	for {
		t.do()
		p.mu.Lock()
		if p.stopped || len(p.idle) >= maxIdleWorkers {
			p.mu.Unlock()
			return
		}
		if ch == nil {
			ch = make(chan task, 1)
		}
		p.idle = append(p.idle, ch)
		p.mu.Unlock()
		var ok bool
		if t, ok = <-ch; !ok {
			return
		}
	}
}

// stop ends the idle workers; run still works afterwards (sessions go on
// during a shutdown), with workers that end after their task.
func (p *workerPool) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopped = true
	for _, ch := range p.idle {
		close(ch)
	}
	p.idle = nil
}
