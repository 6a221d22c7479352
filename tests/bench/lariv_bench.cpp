// tests/bench/lariv_bench.cpp — Lariv against the containers a user would pick instead for a
// concurrent session registry (issue 3). One driver, one adapter per peer (adapters.hpp).
//
// Workloads, each run for 8 B and 4 KiB elements at every thread count:
//   ops30k  the original's "30000 operations per sample": insert 30000, get 30000, remove 30000
//           (split over the threads, each thread gets its own keys in insertion order); each
//           phase is timed on its own between barriers: ns/op = phase wall time / 30000.
//   churn   a registry churn mix: each thread holds a ring of up to --ring keys, prefilled to
//           half; each op is insert (25%, appended to the ring), lookup of a random live key of
//           the ring (50%) or remove of the oldest key (25%), so occupancy stays near 50%.
//           ns/op = sample wall time / ops; one op in --lat-every is timed alone (rdtsc,
//           calibrated against steady_clock) for the p50/p99/p99.9 latencies.
//   hot     every thread looks up the same one element --hot-ops times per sample: the popular
//           target session. ns/op = sample wall time / all threads' lookups (1000 / ns/op = M
//           lookups/s in total), so a read that writes the element's cache line shows here.
// Threads start each phase together from a std::barrier; sample 0 is a warm-up and is discarded.
// Every op is checked: a lookup of a live key must find it with its value intact, every remove
// of a live key must succeed, a removed key must not be found. Any failure makes the exit status
// 1 (the figures themselves never fail: slow machines are not bugs).
// Memory: a counting global operator new/delete (switched on only while measuring, so it costs
// the timed runs nothing) gives the bytes each container holds with --mem-n elements live.
//
// Usage: lariv_bench [--threads 1,2] [--samples 15] [--quick] [--json FILE] [--only NAME,...]
//                    [--sizes 8,4096] [--workloads ops30k,churn] [--ops 30000] [--churn-ops N]
//                    [--ring 30000] [--mem-n 30000] [--lat-every 8]
#include <x86intrin.h>
#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <new>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "adapters.hpp"

// ------------------------------------------------------------------------- allocation counting

namespace {
std::atomic<bool> g_counting{false};
std::atomic<std::int64_t> g_live_bytes{0};

void count_alloc(void* p) noexcept {
    // relaxed: a flag read on every allocation; it is set only while the driver is single-threaded.
    if (p != nullptr && g_counting.load(std::memory_order_relaxed)) {
        g_live_bytes.fetch_add(static_cast<std::int64_t>(malloc_usable_size(p)),
                               std::memory_order_relaxed);
    }
}
void count_free(void* p) noexcept {
    if (p != nullptr && g_counting.load(std::memory_order_relaxed)) {
        g_live_bytes.fetch_sub(static_cast<std::int64_t>(malloc_usable_size(p)),
                               std::memory_order_relaxed);
    }
}
void* alloc_or_throw(std::size_t n) {
    void* p = std::malloc(n == 0 ? 1 : n);
    if (p == nullptr) {
        throw std::bad_alloc();
    }
    count_alloc(p);
    return p;
}
void* aligned_alloc_or_throw(std::size_t n, std::align_val_t al) {
    void* p = nullptr;
    const std::size_t a = std::max(sizeof(void*), static_cast<std::size_t>(al));
    if (posix_memalign(&p, a, n == 0 ? 1 : n) != 0) {
        throw std::bad_alloc();
    }
    count_alloc(p);
    return p;
}
void release(void* p) noexcept {
    count_free(p);
    std::free(p);
}
}  // namespace

void* operator new(std::size_t n) { return alloc_or_throw(n); }
void* operator new[](std::size_t n) { return alloc_or_throw(n); }
void* operator new(std::size_t n, std::align_val_t al) { return aligned_alloc_or_throw(n, al); }
void* operator new[](std::size_t n, std::align_val_t al) { return aligned_alloc_or_throw(n, al); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
    try {
        return alloc_or_throw(n);
    } catch (...) {
        return nullptr;
    }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
    try {
        return alloc_or_throw(n);
    } catch (...) {
        return nullptr;
    }
}
void operator delete(void* p) noexcept { release(p); }
void operator delete[](void* p) noexcept { release(p); }
void operator delete(void* p, std::size_t) noexcept { release(p); }
void operator delete[](void* p, std::size_t) noexcept { release(p); }
void operator delete(void* p, std::align_val_t) noexcept { release(p); }
void operator delete[](void* p, std::align_val_t) noexcept { release(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { release(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { release(p); }

namespace {

using clk = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------- options

struct Config {
    std::vector<unsigned> threads{1, 2};
    int samples = 15;
    std::string json = "build/bench/results.jsonl";
    std::vector<std::string> only;      // container names; empty = all
    std::vector<std::size_t> sizes{8, 4096};
    std::vector<std::string> workloads{"ops30k", "churn", "hot"};
    std::size_t ops = 30000;            // ops30k: elements per sample
    std::size_t churn_ops = 100000;     // churn: ops per sample, all threads together
    std::size_t ring = 30000;           // churn: working set per thread (prefilled to half)
    std::size_t mem_n = 30000;          // memory: live elements
    std::size_t hot_ops = 1000000;      // hot: lookups per thread per sample
    unsigned lat_every = 8;             // churn: time one op in this many
    bool quick = false;
};

std::vector<std::string> split_list(const std::string& s) {
    std::vector<std::string> out;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ',')) {
        if (!item.empty()) {
            out.push_back(item);
        }
    }
    return out;
}

[[noreturn]] void usage(const char* msg) {
    std::fprintf(stderr, "lariv_bench: %s\n", msg);
    std::fprintf(stderr,
                 "usage: lariv_bench [--threads 1,2,4] [--samples N] [--quick] [--json FILE]\n"
                 "       [--only lariv,xenium,...] [--sizes 8,4096] [--workloads ops30k,churn]\n"
                 "       [--ops N] [--churn-ops N] [--ring N] [--mem-n N] [--lat-every N]\n"
                 "       [--hot-ops N]   (workloads: ops30k, churn, hot)\n");
    std::exit(2);
}

Config parse(int argc, char** argv) {
    Config c;
    auto num = [](const std::string& v) -> std::size_t {
        char* end = nullptr;
        const unsigned long long x = std::strtoull(v.c_str(), &end, 10);
        if (end == v.c_str() || *end != '\0' || x == 0) {
            usage(("not a positive number: " + v).c_str());
        }
        return static_cast<std::size_t>(x);
    };
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto val = [&]() -> std::string {
            if (i + 1 >= argc) {
                usage(("missing value for " + a).c_str());
            }
            return argv[++i];
        };
        if (a == "--threads") {
            c.threads.clear();
            for (const auto& t : split_list(val())) {
                c.threads.push_back(static_cast<unsigned>(num(t)));
            }
        } else if (a == "--samples") {
            c.samples = static_cast<int>(num(val()));
        } else if (a == "--quick") {
            c.quick = true;
        } else if (a == "--json") {
            c.json = val();
        } else if (a == "--only") {
            c.only = split_list(val());
        } else if (a == "--sizes") {
            c.sizes.clear();
            for (const auto& t : split_list(val())) {
                c.sizes.push_back(num(t));
            }
        } else if (a == "--workloads") {
            c.workloads = split_list(val());
        } else if (a == "--ops") {
            c.ops = num(val());
        } else if (a == "--churn-ops") {
            c.churn_ops = num(val());
        } else if (a == "--ring") {
            c.ring = std::max<std::size_t>(2, num(val()));
        } else if (a == "--mem-n") {
            c.mem_n = num(val());
        } else if (a == "--hot-ops") {
            c.hot_ops = num(val());
        } else if (a == "--lat-every") {
            c.lat_every = static_cast<unsigned>(num(val()));
        } else if (a == "--help" || a == "-h") {
            usage("help");
        } else {
            usage(("unknown argument " + a).c_str());
        }
    }
    if (c.quick) {
        c.samples = 3;
    }
    for (auto s : c.sizes) {
        if (s != 8 && s != 4096) {
            usage("--sizes takes 8 and/or 4096");
        }
    }
    for (const auto& w : c.workloads) {
        if (w != "ops30k" && w != "churn" && w != "hot") {
            usage("--workloads takes ops30k, churn and/or hot");
        }
    }
    return c;
}

// --------------------------------------------------------------------------------- helpers

std::atomic<std::uint64_t> g_errors{0};

void fail(const char* container, const char* what, std::uint64_t detail) {
    if (g_errors.fetch_add(1, std::memory_order_relaxed) < 20) {
        std::fprintf(stderr, "lariv_bench: CORRECTNESS FAILURE in %s: %s (%" PRIu64 ")\n",
                     container, what, detail);
    }
}

struct Rng {  // splitmix64: the same seed gives every container the same op sequence
    std::uint64_t s;
    std::uint64_t next() noexcept {
        std::uint64_t z = (s += 0x9E3779B97F4A7C15ULL);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        return z ^ (z >> 31);
    }
};

inline std::uint64_t tsc() noexcept {
    _mm_lfence();
    const std::uint64_t t = __rdtsc();
    _mm_lfence();
    return t;
}

double g_ns_per_tick = 1.0;

void calibrate_tsc() {
    const auto c0 = clk::now();
    const std::uint64_t t0 = tsc();
    while (clk::now() - c0 < std::chrono::milliseconds(100)) {
    }
    const auto c1 = clk::now();
    const std::uint64_t t1 = tsc();
    g_ns_per_tick = static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(c1 - c0).count()) /
                    static_cast<double>(t1 - t0);
}

struct Stats {
    double median = 0, min = 0, max = 0;
    std::size_t n = 0;
};
Stats stats(std::vector<double> v) {
    Stats s;
    if (v.empty()) {
        return s;
    }
    std::sort(v.begin(), v.end());
    s.n = v.size();
    s.min = v.front();
    s.max = v.back();
    s.median = v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
    return s;
}
double percentile(const std::vector<std::uint64_t>& sorted, double p) {
    if (sorted.empty()) {
        return 0;
    }
    const auto i = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size()))) ;
    return static_cast<double>(sorted[std::min(sorted.size() - 1, i == 0 ? 0 : i - 1)]) * g_ns_per_tick;
}

inline std::uint64_t make_tag(unsigned tid, std::uint64_t counter) noexcept {
    return (std::uint64_t{tid + 1} << 48) | counter;
}

// ------------------------------------------------------------------------------- results

struct Cell {
    std::string container, value, workload, phase;
    unsigned threads = 0;
    Stats ns;                        // ns/op over the samples
    double p50 = -1, p99 = -1, p999 = -1;  // churn latencies, ns
    double p99_insert = -1, p99_lookup = -1, p99_remove = -1;
};
std::vector<Cell> g_cells;

/// Appends the cell of one (container, value, workload, phase, threads) and returns it.
Cell& add_cell(const char* container, const char* vname, const char* workload, const char* phase,
               unsigned threads, const std::vector<double>& ns_per_op) {
    Cell cell;
    cell.container = container;
    cell.value = vname;
    cell.workload = workload;
    cell.phase = phase;
    cell.threads = threads;
    cell.ns = stats(ns_per_op);
    g_cells.push_back(cell);
    return g_cells.back();
}
std::map<std::pair<std::string, std::string>, double> g_mem;  // (container, value) -> B/elem
std::map<std::string, std::string> g_notes;                   // container+value -> note

/// Runs body(tid) on nthreads threads and joins them.
template <class F>
void run_threads(unsigned nthreads, F& body) {
    std::vector<std::thread> ts;
    for (unsigned t = 0; t < nthreads; ++t) {
        ts.emplace_back(std::ref(body), t);
    }
    for (auto& t : ts) {
        t.join();
    }
}

// ------------------------------------------------------------------------------- ops30k

template <class A>
void run_ops30k(const Config& cfg, unsigned nthreads, const char* vname) {
    A c(std::thread::hardware_concurrency(), cfg.ops);
    using key_t = typename A::key_type;
    const std::size_t total = cfg.ops;
    const int rounds = cfg.samples + 1;  // round 0 is the warm-up
    std::vector<double> ins, get, rem;
    clk::time_point mark[4];
    int phase = 0;
    int round = 0;
    auto on_phase = [&]() noexcept {
        mark[phase] = clk::now();
        if (++phase == 4) {
            if (round > 0) {
                auto ns = [&](int a, int b) {
                    return static_cast<double>(
                               std::chrono::duration_cast<std::chrono::nanoseconds>(mark[b] - mark[a]).count()) /
                           static_cast<double>(total);
                };
                ins.push_back(ns(0, 1));
                get.push_back(ns(1, 2));
                rem.push_back(ns(2, 3));
            }
            phase = 0;
            ++round;
        }
    };
    std::barrier sync(static_cast<std::ptrdiff_t>(nthreads), on_phase);
    auto body = [&](unsigned tid) {
        const std::size_t mine = total / nthreads + (tid < total % nthreads ? 1 : 0);
        std::vector<key_t> keys(mine);
        std::vector<std::uint64_t> tags(mine);
        std::uint64_t counter = 0;
        std::uint64_t sink = 0;
        for (int r = 0; r < rounds; ++r) {
            for (std::size_t i = 0; i < mine; ++i) {
                tags[i] = make_tag(tid, counter++);
            }
            sync.arrive_and_wait();
            for (std::size_t i = 0; i < mine; ++i) {
                keys[i] = c.insert(tags[i]);
            }
            sync.arrive_and_wait();
            std::size_t found = 0;
            std::size_t intact = 0;
            for (std::size_t i = 0; i < mine; ++i) {
                std::uint64_t out = 0;
                if (c.find(keys[i], out)) {
                    ++found;
                    intact += out == tags[i];
                    sink += out;
                }
            }
            sync.arrive_and_wait();
            std::size_t removed = 0;
            for (std::size_t i = 0; i < mine; ++i) {
                removed += c.erase(keys[i]);
            }
            sync.arrive_and_wait();
            // Untimed checks.
            if (found != mine) {
                fail(A::name, "ops30k: a lookup of a live key failed", mine - found);
            }
            if (intact != found) {
                fail(A::name, "ops30k: a value read back is not the one inserted", found - intact);
            }
            if (removed != mine) {
                fail(A::name, "ops30k: a remove of a live key failed", mine - removed);
            }
            if (mine > 0) {
                std::uint64_t out = 0;
                if (c.find(keys[0], out) || c.find(keys[mine - 1], out)) {
                    fail(A::name, "ops30k: a removed key is still found", tags[0]);
                }
            }
        }
        if (sink == 42) {
            std::fputc(' ', stderr);  // keeps the reads alive
        }
    };
    run_threads(nthreads, body);
    const char* phases[3] = {"insert", "get", "remove"};
    std::vector<double>* data[3] = {&ins, &get, &rem};
    for (int p = 0; p < 3; ++p) {
        add_cell(A::name, vname, "ops30k", phases[p], nthreads, *data[p]);
    }
}

// ----------------------------------------------------------------------------------- hot

template <class A>
void run_hot(const Config& cfg, unsigned nthreads, const char* vname) {
    A c(std::thread::hardware_concurrency(), 16);
    const std::uint64_t tag = make_tag(0, 1);
    const auto key = c.insert(tag);
    const int rounds = cfg.samples + 1;
    std::vector<double> per_op;
    clk::time_point start;
    bool timing = false;
    int round = 0;
    auto on_phase = [&]() noexcept {
        if (!timing) {
            start = clk::now();
        } else {
            const auto end = clk::now();
            if (round > 0) {
                per_op.push_back(
                    static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(end - start).count()) /
                    static_cast<double>(cfg.hot_ops * nthreads));
            }
            ++round;
        }
        timing = !timing;
    };
    std::barrier sync(static_cast<std::ptrdiff_t>(nthreads), on_phase);
    auto body = [&](unsigned) {
        std::uint64_t sink = 0;
        std::size_t bad = 0;
        for (int r = 0; r < rounds; ++r) {
            sync.arrive_and_wait();
            for (std::size_t i = 0; i < cfg.hot_ops; ++i) {
                std::uint64_t out = 0;
                bad += !c.find(key, out) || out != tag;
                sink += out;
            }
            sync.arrive_and_wait();
        }
        if (bad != 0) {
            fail(A::name, "hot: a lookup of the live key failed or read another value", bad);
        }
        if (sink == 42) {
            std::fputc(' ', stderr);  // keeps the reads alive
        }
    };
    run_threads(nthreads, body);
    add_cell(A::name, vname, "hot", "get", nthreads, per_op);
}

// --------------------------------------------------------------------------------- churn

template <class A>
void run_churn(const Config& cfg, unsigned nthreads, const char* vname) {
    A c(std::thread::hardware_concurrency(), cfg.ring * nthreads);
    using key_t = typename A::key_type;
    const int rounds = cfg.samples + 1;
    std::vector<double> per_op;
    clk::time_point start;
    int phase = 0;
    int round = 0;
    auto on_phase = [&]() noexcept {
        if (phase == 0) {
            start = clk::now();
            phase = 1;
        } else {
            const auto end = clk::now();
            if (round > 0) {
                per_op.push_back(
                    static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(end - start).count()) /
                    static_cast<double>(cfg.churn_ops));
            }
            phase = 0;
            ++round;
        }
    };
    std::barrier sync(static_cast<std::ptrdiff_t>(nthreads), on_phase);
    // Latencies (ticks) by op type, from the measured rounds only.
    std::vector<std::vector<std::uint64_t>> lat_ins(nthreads), lat_get(nthreads), lat_rem(nthreads);
    auto body = [&](unsigned tid) {
        const std::size_t cap = cfg.ring;
        struct entry {
            key_t key;
            std::uint64_t tag;
        };
        std::vector<entry> ring(cap);
        std::size_t head = 0;
        std::size_t live = 0;
        std::uint64_t counter = 0;
        std::uint64_t sink = 0;
        auto at = [cap](std::size_t i) { return i >= cap ? i - cap : i; };  // i < 2 cap; no divide
        Rng rng{0x1234567ULL + tid * 0x9E3779B97F4A7C15ULL};
        const std::size_t mine = cfg.churn_ops / nthreads + (tid < cfg.churn_ops % nthreads ? 1 : 0);
        lat_ins[tid].reserve(mine * rounds / cfg.lat_every / 3);
        lat_get[tid].reserve(mine * rounds / cfg.lat_every / 1);
        lat_rem[tid].reserve(mine * rounds / cfg.lat_every / 3);
        std::size_t bad_find = 0, bad_value = 0, bad_erase = 0;
        // Prefill to half the working set (untimed).
        for (; live < cap / 2; ++live) {
            const std::uint64_t tag = make_tag(tid, counter++);
            ring[at(head + live)] = entry{c.insert(tag), tag};
        }
        auto do_insert = [&] {
            const std::uint64_t tag = make_tag(tid, counter++);
            ring[at(head + live)] = entry{c.insert(tag), tag};
            ++live;
        };
        auto do_lookup = [&](std::size_t pick) {
            const entry& e = ring[at(head + pick)];
            std::uint64_t out = 0;
            if (c.find(e.key, out)) {
                bad_value += out != e.tag;
                sink += out;
            } else {
                ++bad_find;
            }
        };
        auto do_remove = [&] {
            bad_erase += !c.erase(ring[head].key);
            head = at(head + 1);
            --live;
        };
        for (int r = 0; r < rounds; ++r) {
            const bool record = r > 0;
            sync.arrive_and_wait();
            for (std::size_t i = 0; i < mine; ++i) {
                const std::uint64_t x = rng.next();
                int op = static_cast<int>(x & 3);  // 0 insert, 1-2 lookup, 3 remove
                if (op == 0 && live == cap) {
                    op = 3;
                } else if (op == 3 && live == 0) {
                    op = 0;
                } else if ((op == 1 || op == 2) && live == 0) {
                    op = 0;
                }
                const std::size_t pick = op == 1 || op == 2 ? static_cast<std::size_t>(
                                                                  ((x >> 32) * live) >> 32)
                                                            : 0;
                const bool timed = record && (i % cfg.lat_every) == 0;
                const std::uint64_t t0 = timed ? tsc() : 0;
                switch (op) {
                    case 0:
                        do_insert();
                        break;
                    case 3:
                        do_remove();
                        break;
                    default:
                        do_lookup(pick);
                        break;
                }
                if (timed) {
                    const std::uint64_t dt = tsc() - t0;
                    (op == 0 ? lat_ins : op == 3 ? lat_rem : lat_get)[tid].push_back(dt);
                }
            }
            sync.arrive_and_wait();
        }
        // Drain (untimed): every remaining live key must still be there and removable.
        while (live > 0) {
            do_lookup(0);
            do_remove();
        }
        if (bad_find != 0) {
            fail(A::name, "churn: a lookup of a live key failed", bad_find);
        }
        if (bad_value != 0) {
            fail(A::name, "churn: a value read back is not the one inserted", bad_value);
        }
        if (bad_erase != 0) {
            fail(A::name, "churn: a remove of a live key failed", bad_erase);
        }
        if (sink == 42) {
            std::fputc(' ', stderr);
        }
    };
    run_threads(nthreads, body);
    auto merge = [](std::vector<std::vector<std::uint64_t>>& parts) {
        std::vector<std::uint64_t> all;
        for (auto& p : parts) {
            all.insert(all.end(), p.begin(), p.end());
        }
        std::sort(all.begin(), all.end());
        return all;
    };
    const auto li = merge(lat_ins), lg = merge(lat_get), lr = merge(lat_rem);
    std::vector<std::uint64_t> all;
    all.reserve(li.size() + lg.size() + lr.size());
    all.insert(all.end(), li.begin(), li.end());
    all.insert(all.end(), lg.begin(), lg.end());
    all.insert(all.end(), lr.begin(), lr.end());
    std::sort(all.begin(), all.end());
    Cell& cell = add_cell(A::name, vname, "churn", "mix", nthreads, per_op);
    cell.p50 = percentile(all, 50);
    cell.p99 = percentile(all, 99);
    cell.p999 = percentile(all, 99.9);
    cell.p99_insert = percentile(li, 99);
    cell.p99_lookup = percentile(lg, 99);
    cell.p99_remove = percentile(lr, 99);
}

// -------------------------------------------------------------------------------- memory

template <class A>
void measure_memory(const Config& cfg, const char* vname) {
    std::vector<typename A::key_type> keys;  // the caller's, not the container's: not counted
    keys.reserve(cfg.mem_n);
    std::int64_t held = 0;
    {
        const std::int64_t before = g_live_bytes.load();
        g_counting.store(true);  // single-threaded here: the container and its elements only
        auto c = std::make_unique<A>(std::thread::hardware_concurrency(), cfg.mem_n);
        for (std::size_t i = 0; i < cfg.mem_n; ++i) {
            keys.push_back(c->insert(make_tag(0, i)));
        }
        held = g_live_bytes.load() - before;
        g_counting.store(false);
        std::uint64_t out = 0;
        if (!c->find(keys[cfg.mem_n / 2], out) || out != make_tag(0, cfg.mem_n / 2)) {
            fail(A::name, "memory: a lookup of a live key failed", make_tag(0, cfg.mem_n / 2));
        }
    }
    g_mem[{A::name, vname}] = static_cast<double>(held) / static_cast<double>(cfg.mem_n);
}

// ------------------------------------------------------------------------------- dispatch

template <template <class> class A>
void run_container(const Config& cfg) {
    for (std::size_t sz : cfg.sizes) {
        auto go = [&]<class V>() {
            const char* vname = bench::value_name<V>;
            const std::string name = A<V>::name;
            if (!cfg.only.empty() && std::find(cfg.only.begin(), cfg.only.end(), name) == cfg.only.end()) {
                return;
            }
            g_notes[name + " " + vname] = A<V>::note;
            measure_memory<A<V>>(cfg, vname);
            for (unsigned t : cfg.threads) {
                for (const auto& w : cfg.workloads) {
                    const auto t0 = clk::now();
                    if (w == "ops30k") {
                        run_ops30k<A<V>>(cfg, t, vname);
                    } else if (w == "hot") {
                        run_hot<A<V>>(cfg, t, vname);
                    } else {
                        run_churn<A<V>>(cfg, t, vname);
                    }
                    std::fprintf(stderr, "  %-10s %-4s %-6s %2u threads  %6.2f s\n", name.c_str(), vname,
                                 w.c_str(), t,
                                 std::chrono::duration<double>(clk::now() - t0).count());
                }
            }
        };
        if (sz == 8) {
            go.template operator()<bench::Small>();
        } else {
            go.template operator()<bench::Big>();
        }
    }
}

// --------------------------------------------------------------------------------- output

std::string cpu_model() {
    std::ifstream f("/proc/cpuinfo");
    std::string line;
    while (std::getline(f, line)) {
        if (line.rfind("model name", 0) == 0) {
            const auto p = line.find(':');
            return p == std::string::npos ? line : line.substr(p + 2);
        }
    }
    return "unknown";
}

std::string now_utc() {
    const std::time_t t = std::time(nullptr);
    char buf[64];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
    return buf;
}

const char* kOrder[] = {"lariv", "lariv-snap", "sharded-rw", "tbb-chm", "libcuckoo", "xenium", "mutex-map"};

const Cell* find_cell(const std::string& c, const std::string& v, unsigned t, const std::string& w,
                      const std::string& p) {
    for (const auto& x : g_cells) {
        if (x.container == c && x.value == v && x.threads == t && x.workload == w && x.phase == p) {
            return &x;
        }
    }
    return nullptr;
}

std::string fmt(const char* f, double a) {
    char b[64];
    std::snprintf(b, sizeof b, f, a);
    return b;
}

std::string json_escape(const std::string& s) {
    std::string o;
    for (char ch : s) {
        if (ch == '"' || ch == '\\') {
            o += '\\';
        }
        o += ch;
    }
    return o;
}

void report(const Config& cfg, const std::string& machine, const std::string& date, unsigned cores) {
    std::vector<std::string> present;
    for (const char* n : kOrder) {
        for (const auto& x : g_cells) {
            if (x.container == n) {
                present.emplace_back(n);
                break;
            }
        }
    }
    std::printf("\nns/op: median [min-max] over %d samples (first sample discarded); xR = peer/lariv "
                "median (R > 1: lariv faster)\n",
                cfg.samples);
    const int w = 26;
    for (std::size_t sz : cfg.sizes) {
        const std::string v = sz == 8 ? "8B" : "4KiB";
        for (unsigned t : cfg.threads) {
            std::printf("\n== %s elements, %u thread%s ==\n", v.c_str(), t, t == 1 ? "" : "s");
            std::printf("%-16s", "workload");
            for (const auto& n : present) {
                std::printf(" %-*s", w, n.c_str());
            }
            std::printf("\n");
            struct row {
                const char* w;
                const char* p;
                const char* label;
                int kind;  // 0 ns/op stats, 1 p50, 2 p99, 3 p99.9
            };
            const row rows[] = {{"ops30k", "insert", "30k insert", 0}, {"ops30k", "get", "30k get", 0},
                                {"ops30k", "remove", "30k remove", 0}, {"churn", "mix", "churn ns/op", 0},
                                {"churn", "mix", "churn p50 ns", 1},   {"churn", "mix", "churn p99 ns", 2},
                                {"churn", "mix", "churn p99.9 ns", 3}, {"hot", "get", "hot get ns/op", 0}};
            for (const auto& r : rows) {
                if (find_cell(present.empty() ? "" : present[0], v, t, r.w, r.p) == nullptr) {
                    bool any = false;
                    for (const auto& n : present) {
                        any = any || find_cell(n, v, t, r.w, r.p) != nullptr;
                    }
                    if (!any) {
                        continue;
                    }
                }
                std::printf("%-16s", r.label);
                const Cell* base = find_cell("lariv", v, t, r.w, r.p);
                auto metric = [&](const Cell* c) {
                    return r.kind == 0 ? c->ns.median : r.kind == 1 ? c->p50 : r.kind == 2 ? c->p99 : c->p999;
                };
                for (const auto& n : present) {
                    const Cell* c = find_cell(n, v, t, r.w, r.p);
                    std::string s;
                    if (c != nullptr) {
                        if (r.kind == 0) {
                            s = fmt("%.1f", c->ns.median) + " [" + fmt("%.1f", c->ns.min) + "-" +
                                fmt("%.1f", c->ns.max) + "]";
                        } else {
                            s = fmt("%.0f", metric(c));
                        }
                        if (base != nullptr && metric(base) > 0) {
                            s += " x" + fmt("%.2f", metric(c) / metric(base));
                        }
                    }
                    std::printf(" %-*s", w, s.c_str());
                }
                std::printf("\n");
            }
        }
    }
    std::printf("\nmemory per live element (bytes allocated by the container with %zu elements live, "
                "/ %zu; xR = peer/lariv)\n",
                cfg.mem_n, cfg.mem_n);
    std::printf("%-16s", "value");
    for (const auto& n : present) {
        std::printf(" %-*s", 14, n.c_str());
    }
    std::printf("\n");
    for (std::size_t sz : cfg.sizes) {
        const std::string v = sz == 8 ? "8B" : "4KiB";
        std::printf("%-16s", v.c_str());
        const auto b = g_mem.find({"lariv", v});
        for (const auto& n : present) {
            const auto it = g_mem.find({n, v});
            std::string s;
            if (it != g_mem.end()) {
                s = fmt("%.1f", it->second);
                if (b != g_mem.end() && b->second > 0) {
                    s += " x" + fmt("%.2f", it->second / b->second);
                }
            }
            std::printf(" %-*s", 14, s.c_str());
        }
        std::printf("\n");
    }
    std::printf("\nhow each container stores its elements:\n");
    for (const auto& [k, note] : g_notes) {
        std::printf("  %-16s %s\n", k.c_str(), note.c_str());
    }

    // JSON lines: one object per cell.
    std::error_code ec;
    const std::filesystem::path jp(cfg.json);
    if (jp.has_parent_path()) {
        std::filesystem::create_directories(jp.parent_path(), ec);
    }
    std::ofstream js(cfg.json);
    if (!js) {
        std::fprintf(stderr, "lariv_bench: cannot write %s (results only on stdout)\n", cfg.json.c_str());
        return;
    }
    const std::string head = "{\"date\":\"" + date + "\",\"cpu\":\"" + json_escape(machine) +
                             "\",\"cores\":" + std::to_string(cores) + ",\"samples\":" +
                             std::to_string(cfg.samples);
    for (const auto& c : g_cells) {
        const Cell* base = find_cell("lariv", c.value, c.threads, c.workload, c.phase);
        js << head << ",\"container\":\"" << c.container << "\",\"value\":\"" << c.value
           << "\",\"threads\":" << c.threads << ",\"workload\":\"" << c.workload << "\",\"phase\":\""
           << c.phase << "\",\"ns_per_op_median\":" << c.ns.median << ",\"ns_per_op_min\":" << c.ns.min
           << ",\"ns_per_op_max\":" << c.ns.max;
        if (base != nullptr && base->ns.median > 0) {
            js << ",\"ratio_vs_lariv\":" << c.ns.median / base->ns.median;
        }
        if (c.workload == "churn") {
            js << ",\"p50_ns\":" << c.p50 << ",\"p99_ns\":" << c.p99 << ",\"p999_ns\":" << c.p999
               << ",\"p99_insert_ns\":" << c.p99_insert << ",\"p99_lookup_ns\":" << c.p99_lookup
               << ",\"p99_remove_ns\":" << c.p99_remove;
            if (base != nullptr && base->p99 > 0) {
                js << ",\"p99_ratio_vs_lariv\":" << c.p99 / base->p99 << ",\"p999_ratio_vs_lariv\":"
                   << c.p999 / base->p999;
            }
        }
        js << "}\n";
    }
    for (const auto& [k, bytes] : g_mem) {
        const auto b = g_mem.find({"lariv", k.second});
        js << head << ",\"container\":\"" << k.first << "\",\"value\":\"" << k.second
           << "\",\"workload\":\"memory\",\"live_elements\":" << cfg.mem_n
           << ",\"bytes_per_element\":" << bytes;
        if (b != g_mem.end() && b->second > 0) {
            js << ",\"ratio_vs_lariv\":" << bytes / b->second;
        }
        js << ",\"note\":\"" << json_escape(g_notes[k.first + " " + k.second]) << "\"}\n";
    }
    std::printf("\nJSON lines: %s\n", cfg.json.c_str());
}

}  // namespace

int main(int argc, char** argv) {
    const Config cfg = parse(argc, argv);
    const auto t_start = clk::now();
    const std::string machine = cpu_model();
    const unsigned cores = std::thread::hardware_concurrency();
    const std::string date = now_utc();
    calibrate_tsc();
    std::printf("lariv_bench — Lariv vs the containers a user would pick instead (issue 3)\n");
    std::printf("machine: %s, %u hardware threads; date: %s; compiler: g++ %s\n", machine.c_str(), cores,
                date.c_str(), __VERSION__);
    std::printf("threads:");
    for (auto t : cfg.threads) {
        std::printf(" %u", t);
    }
    std::printf("; samples: %d (+1 warm-up); ops30k: %zu ops/phase; churn: %zu ops/sample, ring %zu/thread "
                "(~50%% live), 1 op in %u timed (rdtsc, %.3f ns/tick)\n",
                cfg.samples, cfg.ops, cfg.churn_ops, cfg.ring, cfg.lat_every, g_ns_per_tick);
    std::fflush(stdout);

    run_container<bench::LarivAdapter>(cfg);
    run_container<bench::LarivSnapAdapter>(cfg);
    run_container<bench::ShardedRwAdapter>(cfg);
    run_container<bench::TbbAdapter>(cfg);
    run_container<bench::CuckooAdapter>(cfg);
    run_container<bench::XeniumAdapter>(cfg);
    run_container<bench::MutexMapAdapter>(cfg);

    report(cfg, machine, date, cores);
    const double secs = std::chrono::duration<double>(clk::now() - t_start).count();
    const std::uint64_t errors = g_errors.load();
    std::printf("\ntotal run time: %.1f s; correctness failures: %" PRIu64 "\n", secs, errors);
    return errors == 0 ? 0 : 1;
}
