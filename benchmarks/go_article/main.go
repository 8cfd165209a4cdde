// The Go article's ingest service, as a peer for benchmarks/serve_load.py.
//
// Its design, written from the article's description: the handler decodes the
// body and puts one Job per payload on a bounded JobQueue (a buffered channel;
// the handler waits while it is full); a dispatcher takes each job and hands it
// to an idle worker, found through a pool of worker channels (each idle worker
// puts its own job channel into the pool); the worker does the job. Here the job
// appends the payload's JSON text as one line to an NDJSON file (the article
// uploaded it to S3), so that the benchmark can check what was stored.
//
//	go build -o /tmp/go_article . && /tmp/go_article -port 8092 -sink /tmp/go-sink
//
// SIGTERM: stop accepting, wait for the open requests and for every queued job,
// flush and fsync the file, print {"accepted": n, "lines_written": m} on stdout,
// exit 0. The answer 202 means "queued in memory", as in the article.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Payload is one payload's JSON text, kept as the client sent it.
type Payload json.RawMessage

// Job is the unit of work: one payload.
type Job struct {
	Payload Payload
}

// Request is the body of POST /v1/payloads.
type Request struct {
	Version   string            `json:"version"`
	Token     string            `json:"token"`
	RequestID string            `json:"request_id"`
	Payloads  []json.RawMessage `json:"payloads"`
}

// Store is where workers put payloads: one file, one line each.
type Store struct {
	mu      sync.Mutex
	file    *os.File
	out     *bufio.Writer
	written int64
}

func (s *Store) Append(p Payload) {
	s.mu.Lock()
	s.out.Write(p)
	s.out.WriteByte('\n')
	s.written++
	s.mu.Unlock()
}

// Worker runs jobs handed to it through its own JobChannel.
type Worker struct {
	WorkerPool chan chan Job
	JobChannel chan Job
	quit       chan bool
}

func NewWorker(pool chan chan Job) Worker {
	return Worker{WorkerPool: pool, JobChannel: make(chan Job), quit: make(chan bool)}
}

// Start registers the worker as idle in the pool, runs the job it gets, repeats.
func (w Worker) Start(store *Store, done *sync.WaitGroup) {
	go func() {
		for {
			w.WorkerPool <- w.JobChannel
			select {
			case job := <-w.JobChannel:
				store.Append(job.Payload)
				done.Done()
			case <-w.quit:
				return
			}
		}
	}()
}

// Dispatcher hands each job of the JobQueue to an idle worker.
type Dispatcher struct {
	WorkerPool chan chan Job
	maxWorkers int
}

func NewDispatcher(maxWorkers int) *Dispatcher {
	return &Dispatcher{WorkerPool: make(chan chan Job, maxWorkers), maxWorkers: maxWorkers}
}

func (d *Dispatcher) Run(queue chan Job, store *Store, done *sync.WaitGroup) {
	for i := 0; i < d.maxWorkers; i++ {
		NewWorker(d.WorkerPool).Start(store, done)
	}
	go d.dispatch(queue)
}

func (d *Dispatcher) dispatch(queue chan Job) {
	for job := range queue {
		go func(job Job) {
			jobChannel := <-d.WorkerPool // an idle worker's channel
			jobChannel <- job
		}(job)
	}
}

func main() {
	port := flag.Int("port", 8092, "port on 127.0.0.1")
	sink := flag.String("sink", "", "directory of the NDJSON file")
	workers := flag.Int("workers", 2*runtime.GOMAXPROCS(0), "workers (MAX_WORKERS)")
	maxQueue := flag.Int("queue", 8192, "jobs the JobQueue holds (MAX_QUEUE)")
	flag.Parse()
	if *sink == "" {
		fmt.Fprintln(os.Stderr, "-sink is required")
		os.Exit(2)
	}
	if err := os.MkdirAll(*sink, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	file, err := os.OpenFile(
		filepath.Join(*sink, "segment-000001.ndjson"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	store := &Store{file: file, out: bufio.NewWriterSize(file, 1<<20)}
	queue := make(chan Job, *maxQueue)
	var pending sync.WaitGroup
	var accepted int64
	NewDispatcher(*workers).Run(queue, store, &pending)

	mux := http.NewServeMux()
	mux.HandleFunc("/v1/payloads", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		var request Request
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&request); err != nil {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"error":"malformed JSON"}`))
			return
		}
		pending.Add(len(request.Payloads))
		for _, payload := range request.Payloads {
			queue <- Job{Payload: Payload(payload)}
		}
		atomic.AddInt64(&accepted, int64(len(request.Payloads)))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, `{"accepted":%d,"request_id":%q}`, len(request.Payloads), request.RequestID)
	})
	server := &http.Server{Addr: fmt.Sprintf("127.0.0.1:%d", *port), Handler: mux}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	stopped := make(chan struct{})
	go func() {
		<-stop
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		server.Shutdown(ctx) // returns once every open request was answered
		close(stopped)
	}()
	if err := server.ListenAndServe(); err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	<-stopped      // ListenAndServe returns as Shutdown begins, not when it ends
	pending.Wait() // every queued job has run
	store.mu.Lock()
	store.out.Flush()
	file.Sync()
	store.mu.Unlock()
	fmt.Printf("{\"accepted\":%d,\"lines_written\":%d}\n", atomic.LoadInt64(&accepted), store.written)
}
