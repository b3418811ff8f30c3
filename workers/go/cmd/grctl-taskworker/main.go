// Command grctl-taskworker runs a Go task worker for one grctl queue: the example handlers of
// docs/remote-tasks.md, and what the repository's tests run next to Python workflows.
//
//	grctl-taskworker -brokers 127.0.0.1:9092 -namespace default -queue go-scoring
//
// It prints "ready <topic>" on stdout once it has joined the group, and stops on SIGINT/SIGTERM.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"grctl.local/workers/go/taskworker"
)

func main() {
	brokers := flag.String("brokers", envOr("GRCTL_KAFKA_SERVERS", "127.0.0.1:9092"), "bootstrap servers, comma-separated")
	namespace := flag.String("namespace", envOr("GRCTL_NAMESPACE", "default"), "grctl namespace")
	queue := flag.String("queue", "go-scoring", "task queue")
	concurrency := flag.Int("concurrency", 16, "tasks run at once")
	flag.Parse()

	w, err := taskworker.New(taskworker.Config{
		Brokers: strings.Split(*brokers, ","), Namespace: *namespace, Queue: *queue, Concurrency: *concurrency,
	}, map[string]taskworker.Handler{
		"go_score": score,
		"go_fail":  fail,
		"go_beat":  beat,
		"go_sleep": sleep,
		"go_echo":  echo,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	fmt.Println("ready", w.Topic())
	if err := w.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	r, c, f, x, s := w.Stats.Snapshot()
	fmt.Printf("stopped requests=%d completed=%d failed=%d cancelled=%d skipped=%d\n", r, c, f, x, s)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// go_score: {"x": n} -> {"score": n*10, "by": "go"}
func score(_ context.Context, t *taskworker.Task) (any, error) {
	var in struct {
		X int `json:"x"`
	}
	if err := json.Unmarshal(t.Payload, &in); err != nil {
		return nil, taskworker.NonRetryable{Err: fmt.Errorf("payload: %w", err)}
	}
	return map[string]any{"score": in.X * 10, "by": "go", "attempt": t.Attempt}, nil
}

// go_fail: fails attempts before {"succeed_at": n}; never succeeds without it, and never retries with {"fatal": true}.
func fail(_ context.Context, t *taskworker.Task) (any, error) {
	var in struct {
		SucceedAt int  `json:"succeed_at"`
		Fatal     bool `json:"fatal"`
	}
	_ = json.Unmarshal(t.Payload, &in)
	if in.Fatal {
		return nil, taskworker.NonRetryable{Err: taskworker.TypedError{Type: "Fatal", Message: "refused"}}
	}
	if in.SucceedAt > 0 && t.Attempt >= in.SucceedAt {
		return fmt.Sprintf("ok at attempt %d", t.Attempt), nil
	}
	return nil, taskworker.TypedError{Type: "Flaky", Message: fmt.Sprintf("attempt %d failed", t.Attempt)}
}

// go_beat: heartbeats {"beats": n} times, 100 ms apart, then answers.
func beat(ctx context.Context, t *taskworker.Task) (any, error) {
	var in struct {
		Beats int `json:"beats"`
	}
	_ = json.Unmarshal(t.Payload, &in)
	for i := 0; i < in.Beats; i++ {
		if err := t.Heartbeat(ctx, map[string]any{"done": i}); err != nil {
			return nil, err
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return "beat", nil
}

// go_sleep: waits {"ms": n} or until cancelled.
func sleep(ctx context.Context, t *taskworker.Task) (any, error) {
	var in struct {
		Ms int `json:"ms"`
	}
	_ = json.Unmarshal(t.Payload, &in)
	select {
	case <-time.After(time.Duration(in.Ms) * time.Millisecond):
		return "slept", nil
	case <-ctx.Done():
		return nil, errors.New("cancelled")
	}
}

// go_echo: the payload back.
func echo(_ context.Context, t *taskworker.Task) (any, error) {
	return t.Payload, nil
}
