package lb

import "sync/atomic"

// maxIdleWorkers bounds the goroutines kept waiting for work after their
// session ended.
const maxIdleWorkers = 256

// task is a new client connection to handle, or the client-to-backend
// direction of session s.
type task struct {
	l      *LB
	client *sock
	s      *session
}

func (t task) do() {
	if t.s != nil {
		defer t.s.upload.Done()
		t.l.copy(t.s, t.s.backend, t.s.client, &t.s.b.bytesIn)
		return
	}
	t.l.handle(t.client)
}

// workerPool runs tasks on goroutines that outlive one session: a new
// connection is handed to a waiting goroutine whose stack has already
// grown to what a session needs, instead of a new goroutine that starts
// small and copies its stack as the dial goes deep.
type workerPool struct {
	work  chan task
	done  chan struct{}
	stopd atomic.Bool
	idle  atomic.Int32
}

func newWorkerPool() workerPool {
	return workerPool{work: make(chan task), done: make(chan struct{})}
}

// run hands t to an idle worker, or starts one.
func (p *workerPool) run(t task) {
	select {
	case p.work <- t:
	default:
		go p.worker(t)
	}
}

func (p *workerPool) worker(t task) {
	for {
		t.do()
		if p.idle.Add(1) > maxIdleWorkers {
			p.idle.Add(-1)
			return
		}
		select {
		case t = <-p.work:
			p.idle.Add(-1)
		case <-p.done:
			p.idle.Add(-1)
			return
		}
	}
}

// stop lets idle workers end; run still works afterwards (sessions go on
// during a shutdown), with workers that end after their task.
func (p *workerPool) stop() {
	if p.stopd.CompareAndSwap(false, true) {
		close(p.done)
	}
}
