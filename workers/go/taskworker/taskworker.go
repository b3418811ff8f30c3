// Package taskworker runs grctl remote tasks in Go (docs/remote-tasks.md is the protocol).
//
// A Worker consumes one queue's topic (grctl.<namespace>.tasks.<queue>) in a classic consumer
// group with read_committed isolation, runs each request by the handler registered under the
// task's name, and produces the answer (JSON) to the reply topic and partition the request
// names: the run's partition of the namespace's directives topic, where the owning engine
// worker applies it exactly once, fenced by task id and attempt.
//
// Execution is at least once: a request's offset is committed only after its answer was
// acknowledged by the brokers (acks=all, idempotent producer), so a crash in between runs the
// task again; the engine drops the second answer.
package taskworker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Task is one attempt of a remote task, as a handler sees it.
type Task struct {
	Name           string
	TaskID         string
	Attempt        int
	IdempotencyKey string // <run_id>:<task_id>: the same for every attempt; deduplicate side effects with it
	WfID           string
	RunID          string
	WfType         string
	Step           string
	Payload        json.RawMessage

	w   *Worker
	req *request
}

// Heartbeat tells the engine the attempt is alive (its heartbeat deadline moves); details show in describe.
func (t *Task) Heartbeat(ctx context.Context, details any) error {
	return t.w.answer(ctx, t.req, map[string]any{"t": "task_heartbeat", "details": details})
}

// Handler runs a task. What it returns is the result (JSON-encodable); an error fails the attempt.
type Handler func(ctx context.Context, t *Task) (any, error)

// NonRetryable wraps an error that must not be retried, whatever the task's retry policy says.
type NonRetryable struct{ Err error }

func (e NonRetryable) Error() string { return e.Err.Error() }
func (e NonRetryable) Unwrap() error { return e.Err }

// TypedError lets a handler name the error type the engine's retry policy filters on.
type TypedError struct {
	Type    string
	Message string
}

func (e TypedError) Error() string { return e.Type + ": " + e.Message }

// Config says where the queue is.
type Config struct {
	Brokers     []string
	Namespace   string
	Queue       string
	Group       string // default grctl.<namespace>.tasks.<queue>
	WorkerID    string // default hostname:pid
	Concurrency int    // default 16
	Partitions  int32  // partitions of the queue topic when it is created (default: those of directives)
	Logger      *log.Logger
}

// Stats counts what a worker did since it started.
type Stats struct {
	mu                                              sync.Mutex
	Requests, Completed, Failed, Cancelled, Skipped int
}

func (s *Stats) add(f func(*Stats)) { s.mu.Lock(); f(s); s.mu.Unlock() }

// Snapshot returns a copy of the counters.
func (s *Stats) Snapshot() (requests, completed, failed, cancelled, skipped int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.Requests, s.Completed, s.Failed, s.Cancelled, s.Skipped
}

type request struct {
	Type            string          `json:"type"`
	V               int             `json:"v"`
	WfID            string          `json:"wf_id"`
	RunID           string          `json:"run_id"`
	WfType          string          `json:"wf_type"`
	Step            string          `json:"step"`
	TaskID          string          `json:"task_id"`
	Task            string          `json:"task"`
	Attempt         int             `json:"attempt"`
	Payload         json.RawMessage `json:"payload"`
	IdempotencyKey  string          `json:"idempotency_key"`
	ScheduleToStart *int64          `json:"schedule_to_start_ms"`
	StartToClose    *int64          `json:"start_to_close_ms"`
	HeartbeatMs     *int64          `json:"heartbeat_ms"`
	ReplyTopic      string          `json:"reply_topic"`
	ReplyPartition  int32           `json:"reply_partition"`
	Reason          string          `json:"reason"`
}

type inflightKey struct {
	key     string
	attempt int
}

type partState struct {
	inFlight map[int64]struct{}
	next     int64 // one past the highest offset read
	epoch    int32
}

// Worker runs the tasks of one queue.
type Worker struct {
	cfg      Config
	handlers map[string]Handler
	topic    string
	cl       *kgo.Client
	Stats    Stats

	mu      sync.Mutex
	parts   map[int32]*partState
	running map[inflightKey]context.CancelFunc
	wg      sync.WaitGroup
}

// New makes a worker; Run starts it.
func New(cfg Config, handlers map[string]Handler) (*Worker, error) {
	if len(handlers) == 0 {
		return nil, errors.New("taskworker: at least one handler is needed")
	}
	if cfg.Namespace == "" {
		cfg.Namespace = "default"
	}
	if cfg.Queue == "" {
		return nil, errors.New("taskworker: Config.Queue is empty")
	}
	topic := fmt.Sprintf("grctl.%s.tasks.%s", cfg.Namespace, cfg.Queue)
	if cfg.Group == "" {
		cfg.Group = topic
	}
	if cfg.WorkerID == "" {
		host, _ := os.Hostname()
		cfg.WorkerID = fmt.Sprintf("go:%s:%d", host, os.Getpid())
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 16
	}
	if cfg.Logger == nil {
		cfg.Logger = log.New(os.Stderr, "grctl-taskworker ", log.LstdFlags|log.Lmicroseconds)
	}
	return &Worker{
		cfg: cfg, handlers: handlers, topic: topic,
		parts: map[int32]*partState{}, running: map[inflightKey]context.CancelFunc{},
	}, nil
}

// Topic is the queue's topic.
func (w *Worker) Topic() string { return w.topic }

func (w *Worker) ensureTopic(ctx context.Context) error {
	admCl, err := kgo.NewClient(kgo.SeedBrokers(w.cfg.Brokers...))
	if err != nil {
		return err
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	directives := fmt.Sprintf("grctl.%s.directives", w.cfg.Namespace)
	details, err := adm.ListTopics(ctx, directives, w.topic)
	if err != nil {
		return fmt.Errorf("taskworker: cannot read topic metadata: %w", err)
	}
	d, ok := details[directives]
	if !ok || d.Err != nil {
		return fmt.Errorf("taskworker: namespace %q has no topic %s: create the namespace first", w.cfg.Namespace, directives)
	}
	if t, ok := details[w.topic]; ok && t.Err == nil {
		return nil
	}
	parts := w.cfg.Partitions
	if parts <= 0 {
		parts = int32(len(d.Partitions))
	}
	resp, err := adm.CreateTopic(ctx, parts, -1, nil, w.topic)
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("taskworker: cannot create %s: %w", w.topic, err)
	}
	if resp.Err != nil && !errors.Is(resp.Err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("taskworker: cannot create %s: %w", w.topic, resp.Err)
	}
	return nil
}

// Run consumes the queue until ctx is cancelled, then lets running tasks finish (up to 30 s),
// commits what finished, and leaves the group.
func (w *Worker) Run(ctx context.Context) error {
	if err := w.ensureTopic(ctx); err != nil {
		return err
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(w.cfg.Brokers...),
		kgo.ConsumerGroup(w.cfg.Group),
		kgo.ConsumeTopics(w.topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.FetchMaxWait(50*time.Millisecond),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), // answers go to the partition the request names
		kgo.ProducerLinger(time.Millisecond),
		kgo.ClientID(w.cfg.WorkerID),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
			w.mu.Lock()
			for _, p := range assigned[w.topic] {
				if _, ok := w.parts[p]; !ok {
					w.parts[p] = &partState{inFlight: map[int64]struct{}{}, next: -1}
				}
			}
			w.mu.Unlock()
		}),
		kgo.OnPartitionsRevoked(w.onRevoked),
		kgo.OnPartitionsLost(w.onRevoked),
	)
	if err != nil {
		return err
	}
	w.cl = cl
	sem := make(chan struct{}, w.cfg.Concurrency)
	commitTick := time.NewTicker(time.Second)
	defer commitTick.Stop()
	for ctx.Err() == nil {
		fetches := cl.PollRecords(ctx, w.cfg.Concurrency)
		if ctx.Err() != nil {
			break
		}
		fetches.EachError(func(t string, p int32, err error) {
			w.cfg.Logger.Printf("fetch %s[%d]: %v", t, p, err)
		})
		fetches.EachRecord(func(r *kgo.Record) { w.take(ctx, r, sem) })
		select {
		case <-commitTick.C:
			w.commit(context.Background())
		default:
		}
	}
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		w.mu.Lock()
		for _, cancel := range w.running {
			cancel()
		}
		w.mu.Unlock()
		<-done
	}
	w.commit(context.Background())
	cl.LeaveGroup()
	cl.Close()
	return nil
}

func (w *Worker) onRevoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	w.commit(ctx) // what finished; what still runs answers, and may run again on the new owner
	w.mu.Lock()
	for _, p := range revoked[w.topic] {
		delete(w.parts, p)
	}
	w.mu.Unlock()
}

func (w *Worker) commit(ctx context.Context) {
	w.mu.Lock()
	offsets := map[string]map[int32]kgo.EpochOffset{w.topic: {}}
	for p, st := range w.parts {
		if st.next < 0 {
			continue
		}
		at := st.next
		for o := range st.inFlight {
			if o < at {
				at = o
			}
		}
		offsets[w.topic][p] = kgo.EpochOffset{Epoch: st.epoch, Offset: at}
	}
	w.mu.Unlock()
	if len(offsets[w.topic]) == 0 || w.cl == nil {
		return
	}
	w.cl.CommitOffsetsSync(ctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, _ *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			w.cfg.Logger.Printf("offset commit: %v (the tasks after it may run again)", err)
		}
	})
}

func (w *Worker) take(ctx context.Context, r *kgo.Record, sem chan struct{}) {
	w.mu.Lock()
	st, ok := w.parts[r.Partition]
	if !ok {
		st = &partState{inFlight: map[int64]struct{}{}, next: -1}
		w.parts[r.Partition] = st
	}
	if r.Offset+1 > st.next {
		st.next = r.Offset + 1
		st.epoch = r.LeaderEpoch
	}
	w.mu.Unlock()
	var req request
	if err := json.Unmarshal(r.Value, &req); err != nil {
		w.Stats.add(func(s *Stats) { s.Skipped++ })
		w.cfg.Logger.Printf("%s[%d]@%d: undecodable record skipped: %v", r.Topic, r.Partition, r.Offset, err)
		return
	}
	key := inflightKey{req.IdempotencyKey, req.Attempt}
	switch req.Type {
	case "task_cancel":
		w.mu.Lock()
		if cancel, ok := w.running[key]; ok {
			cancel()
		}
		w.mu.Unlock()
		return
	case "task_request":
	default:
		return // a record type of a newer protocol
	}
	w.Stats.add(func(s *Stats) { s.Requests++ })
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return // not started: its offset stays uncommitted, the next owner runs it
	}
	tctx, cancel := context.WithCancel(context.Background())
	w.mu.Lock()
	st.inFlight[r.Offset] = struct{}{}
	w.running[key] = cancel
	w.mu.Unlock()
	w.wg.Add(1)
	go func(offset int64, part int32) {
		defer func() {
			cancel()
			w.mu.Lock()
			delete(w.running, key)
			if s, ok := w.parts[part]; ok {
				delete(s.inFlight, offset)
			}
			w.mu.Unlock()
			<-sem
			w.wg.Done()
		}()
		w.execute(tctx, &req)
	}(r.Offset, r.Partition)
}

func (w *Worker) execute(ctx context.Context, req *request) {
	h, ok := w.handlers[req.Task]
	if !ok {
		w.deliver(req, map[string]any{"t": "task_result", "ok": false, "error": map[string]any{
			"type": "UnknownTask", "message": fmt.Sprintf("no handler for task %q on this Go worker of queue %q", req.Task, w.cfg.Queue),
			"retryable": true,
		}})
		return
	}
	if req.ScheduleToStart != nil || req.HeartbeatMs != nil {
		if err := w.answer(ctx, req, map[string]any{"t": "task_started"}); err != nil {
			w.cfg.Logger.Printf("task %s of %s: started not delivered: %v", req.TaskID, req.WfID, err)
		}
	}
	task := &Task{
		Name: req.Task, TaskID: req.TaskID, Attempt: req.Attempt, IdempotencyKey: req.IdempotencyKey,
		WfID: req.WfID, RunID: req.RunID, WfType: req.WfType, Step: req.Step, Payload: req.Payload, w: w, req: req,
	}
	result, err := h(ctx, task)
	if ctx.Err() != nil {
		w.Stats.add(func(s *Stats) { s.Cancelled++ })
		return // cancelled by the run: nobody waits for the answer
	}
	if err != nil {
		w.Stats.add(func(s *Stats) { s.Failed++ })
		etype, msg := "Error", err.Error()
		var typed TypedError
		if errors.As(err, &typed) {
			etype, msg = typed.Type, typed.Message
		}
		var nr NonRetryable
		retryable := !errors.As(err, &nr)
		w.deliver(req, map[string]any{"t": "task_result", "ok": false, "error": map[string]any{
			"type": etype, "message": msg, "retryable": retryable,
		}})
		return
	}
	w.Stats.add(func(s *Stats) { s.Completed++ })
	w.deliver(req, map[string]any{"t": "task_result", "ok": true, "result": result})
}

// deliver produces an answer and waits for the brokers' acknowledgement (then its request's offset may be committed).
func (w *Worker) deliver(req *request, fields map[string]any) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.answer(ctx, req, fields); err != nil {
		w.cfg.Logger.Printf("task %s of %s: answer not delivered (%v); the engine's timeout retries it", req.TaskID, req.WfID, err)
	}
}

func (w *Worker) answer(ctx context.Context, req *request, fields map[string]any) error {
	rec := map[string]any{
		"v": 1, "wf_id": req.WfID, "run_id": req.RunID, "task_id": req.TaskID, "attempt": req.Attempt,
		"worker": w.cfg.WorkerID,
	}
	for k, v := range fields {
		rec[k] = v
	}
	value, err := json.Marshal(rec)
	if err != nil {
		value, _ = json.Marshal(map[string]any{
			"t": "task_result", "v": 1, "wf_id": req.WfID, "run_id": req.RunID, "task_id": req.TaskID,
			"attempt": req.Attempt, "worker": w.cfg.WorkerID, "ok": false,
			"error": map[string]any{"type": "EncodeError", "message": err.Error(), "retryable": false},
		})
	}
	topic := req.ReplyTopic
	if topic == "" {
		topic = fmt.Sprintf("grctl.%s.directives", w.cfg.Namespace)
	}
	if req.ReplyPartition < 0 {
		return fmt.Errorf("request of task %s has no reply_partition", req.TaskID)
	}
	r := &kgo.Record{Topic: topic, Partition: req.ReplyPartition, Key: []byte(req.WfID), Value: value}
	return w.cl.ProduceSync(ctx, r).FirstErr()
}
