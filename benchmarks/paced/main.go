// paced: an HTTP/1.1 load generator for ringkv's key API that costs little CPU per request,
// open loop at a fixed rate (latency counted from each request's due time, as wrk2 does, so
// a slow answer cannot hide the requests queued behind it) or closed loop (rate 0).
//
// Requests go over keep-alive connections spread round robin over the endpoints; a request
// is written whole in one system call and its answer parsed by Content-Length. Tickets are
// issued every millisecond for every request due by then; a connection takes the next ticket
// when it is free. Requests due but not sent by the end of the drain period are "unsent".
// Only the standard library: benchmarks/open_loop.py builds it with `go build`.
//
//	paced -endpoints http://127.0.0.1:7001,... -keys 10000 -method GET -query r=quorum \
//	      -rate 3000 -connections 64 -duration 15s -warmup 2s -timeout 5s -out result.json
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand"
	"net"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type sample struct {
	latency time.Duration // from the due time (open loop) or the send (closed loop)
	service time.Duration // from the send
}

type worker struct {
	samples  []sample
	ok       int
	statuses map[int]int
	failures int
}

type result struct {
	Requests       int            `json:"requests"`
	OK             int            `json:"ok"`
	Errors         int            `json:"errors"`
	Statuses       map[string]int `json:"statuses"`
	ConnFailures   int            `json:"connection_failures"`
	Unsent         int64          `json:"unsent"`
	Seconds        float64        `json:"seconds"`
	LatencyUs      map[string]int `json:"latency_us"`
	ServiceUs      map[string]int `json:"service_us"`
	CPUSeconds     float64        `json:"cpu_seconds"`
	Rate           float64        `json:"rate"`
	Connections    int            `json:"connections"`
	MeasuredFromMs int64          `json:"measured_from_ms"`
}

var quantiles = []float64{50, 90, 99, 99.9, 100}

func main() {
	endpoints := flag.String("endpoints", "", "comma-separated http://host:port")
	keys := flag.Int("keys", 10000, "keys PREFIX0..PREFIX{keys-1}, chosen uniformly")
	prefix := flag.String("prefix", "bench%3A", "percent-encoded key prefix")
	method := flag.String("method", "GET", "GET or PUT")
	query := flag.String("query", "", "query string (without ?)")
	valueBytes := flag.Int("value-bytes", 1024, "PUT body size")
	rate := flag.Float64("rate", 0, "requests per second (0: closed loop)")
	connections := flag.Int("connections", 64, "keep-alive connections")
	duration := flag.Duration("duration", 15*time.Second, "measured period")
	warmup := flag.Duration("warmup", 2*time.Second, "unmeasured period before it")
	timeout := flag.Duration("timeout", 5*time.Second, "per request, and the drain period")
	seed := flag.Int64("seed", 1, "random seed")
	out := flag.String("out", "", "write the JSON result here (default: stdout)")
	flag.Parse()
	if *endpoints == "" || (*method != "GET" && *method != "PUT") || *connections < 1 ||
		*keys < 1 || *rate < 0 {
		fmt.Fprintln(os.Stderr, "paced: -endpoints, -method GET|PUT, positive -connections and -keys, -rate >= 0")
		os.Exit(2)
	}
	hosts := []string{}
	for _, e := range strings.Split(*endpoints, ",") {
		u, err := url.Parse(e)
		if err != nil || u.Host == "" {
			fmt.Fprintf(os.Stderr, "paced: bad endpoint %q\n", e)
			os.Exit(2)
		}
		hosts = append(hosts, u.Host)
	}
	body := make([]byte, *valueBytes)
	rand.New(rand.NewSource(*seed)).Read(body)
	if *query != "" {
		*query = "?" + *query
	}

	start := time.Now()
	measureFrom := start.Add(*warmup)
	end := measureFrom.Add(*duration)
	stop := end.Add(*timeout) // the drain: no request is sent after this

	var tickets chan time.Time
	var unsent int64
	if *rate > 0 {
		tickets = make(chan time.Time, 1<<20)
		go func() {
			interval := time.Duration(float64(time.Second) / *rate)
			next := start
			for {
				now := time.Now()
				for !next.After(now) && next.Before(end) {
					select {
					case tickets <- next:
					default:
						atomic.AddInt64(&unsent, 1)
					}
					next = next.Add(interval)
				}
				if !next.Before(end) {
					close(tickets)
					return
				}
				time.Sleep(time.Millisecond)
			}
		}()
	}

	workers := make([]*worker, *connections)
	var wg sync.WaitGroup
	for i := range workers {
		w := &worker{statuses: map[int]int{}}
		workers[i] = w
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			run(w, hosts[i%len(hosts)], *method, *prefix, *query, body, *keys,
				rand.New(rand.NewSource(*seed*7919+int64(i))), tickets, &unsent, measureFrom, end, stop, *timeout)
		}(i)
	}
	wg.Wait()

	var res result
	res.Statuses = map[string]int{}
	var all []sample
	for _, w := range workers {
		all = append(all, w.samples...)
		res.OK += w.ok
		res.ConnFailures += w.failures
		for s, n := range w.statuses {
			res.Statuses[strconv.Itoa(s)] += n
			res.Requests += n
		}
	}
	res.Requests += res.ConnFailures
	res.Errors = res.Requests - res.OK
	res.Unsent = unsent
	res.Seconds = duration.Seconds()
	res.Rate = *rate
	res.Connections = *connections
	res.MeasuredFromMs = measureFrom.UnixMilli()
	res.LatencyUs = summarize(all, func(s sample) time.Duration { return s.latency })
	res.ServiceUs = summarize(all, func(s sample) time.Duration { return s.service })
	var usage syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &usage) == nil {
		res.CPUSeconds = float64(usage.Utime.Nano()+usage.Stime.Nano()) / 1e9
	}
	doc, _ := json.MarshalIndent(res, "", " ")
	if *out == "" {
		os.Stdout.Write(append(doc, '\n'))
	} else if err := os.WriteFile(*out, doc, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "paced:", err)
		os.Exit(1)
	}
}

func summarize(all []sample, pick func(sample) time.Duration) map[string]int {
	values := make([]int, len(all))
	for i, s := range all {
		values[i] = int(pick(s) / time.Microsecond)
	}
	sort.Ints(values)
	out := map[string]int{}
	for _, q := range quantiles {
		key := "p" + strconv.FormatFloat(q, 'f', -1, 64)
		if len(values) == 0 {
			out[key] = 0
			continue
		}
		rank := int(q/100*float64(len(values))+0.999999) - 1 // nearest rank
		if rank < 0 {
			rank = 0
		}
		if rank >= len(values) {
			rank = len(values) - 1
		}
		out[key] = values[rank]
	}
	return out
}

// run serves tickets (or, closed loop, sends back to back) on one connection until the end.
func run(w *worker, host, method, prefix, query string, body []byte, keys int, rng *rand.Rand,
	tickets chan time.Time, unsent *int64, measureFrom, end, stop time.Time, timeout time.Duration) {
	var conn net.Conn
	var reader *bufio.Reader
	var buf bytes.Buffer
	for {
		var due time.Time
		if tickets != nil {
			t, more := <-tickets
			if !more {
				break
			}
			due = t
			if time.Now().After(stop) {
				atomic.AddInt64(unsent, 1) // past the drain: it stays unsent, as do the rest
				continue
			}
		} else {
			due = time.Now()
			if !due.Before(end) {
				break
			}
		}
		if conn == nil {
			c, err := net.DialTimeout("tcp", host, timeout)
			if err != nil {
				w.failures++
				time.Sleep(10 * time.Millisecond)
				continue
			}
			conn, reader = c, bufio.NewReaderSize(c, 64<<10)
		}
		buf.Reset()
		fmt.Fprintf(&buf, "%s /v1/kv/%s%d%s HTTP/1.1\r\nHost: %s\r\n", method, prefix, rng.Intn(keys), query, host)
		if method == "PUT" {
			fmt.Fprintf(&buf, "Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", len(body))
			buf.Write(body)
		} else {
			buf.WriteString("\r\n")
		}
		sent := time.Now()
		conn.SetDeadline(sent.Add(timeout))
		status, err := exchange(conn, reader, buf.Bytes())
		done := time.Now()
		if err != nil {
			w.failures++
			conn.Close()
			conn = nil
			continue
		}
		if due.Before(measureFrom) || !due.Before(end) {
			continue // warm-up, or (closed loop) past the end
		}
		w.statuses[status]++
		// A read that finds siblings (300) or no value (404) is answered, as ringkv bench counts it.
		if (status >= 200 && status < 300) || (method == "GET" && (status == 300 || status == 404)) {
			w.ok++
			w.samples = append(w.samples, sample{latency: done.Sub(due), service: done.Sub(sent)})
		}
	}
	if conn != nil {
		conn.Close()
	}
}

// exchange writes one request and reads its answer; the status code.
func exchange(conn net.Conn, reader *bufio.Reader, request []byte) (int, error) {
	if _, err := conn.Write(request); err != nil {
		return 0, err
	}
	line, err := reader.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, err
	}
	length := 0
	for {
		header, err := reader.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		if len(header) <= 2 {
			break
		}
		if len(header) > 15 && strings.EqualFold(string(header[:15]), "content-length:") {
			length, err = strconv.Atoi(strings.TrimSpace(string(header[15:])))
			if err != nil {
				return 0, err
			}
		}
	}
	if _, err := reader.Discard(length); err != nil {
		return 0, err
	}
	return status, nil
}
