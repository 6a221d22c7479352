// tests/lariv/stress.cpp — seeded, replayable multi-thread churn of Lariv with invariant checks
// (RELIABILITY.md L1, L2, L5, L6, L7).
//
// Threads push, get, get_mut, remove and take at random over a shared pool of indexes (with
// --snapshot: a container with snapshot reads, where load() takes get's and get_mut's share); a push
// evicts (removes) the index it replaces in the pool, and removed indexes stay in the pool, so
// stale indexes are hammered while their slots are reused. Every operation is logged with its
// invocation and response times; each epoch ends at a barrier where the per-index history checker
// (history.hpp) runs, the container is iterated and compared with the expected live set, and
// everything is taken out. Exits non-zero on any violation (or, with --expect-violations, when
// none was found: the mutant build must be caught).
//
//   stress [--threads N] [--ops N] [--seed S] [--cap N] [--big] [--chaos PERMILLE]
//          [--pool N] [--expect-violations] [--max-op-ms N] [--snapshot]
#include <algorithm>
#include <array>
#include <atomic>
#include <barrier>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <type_traits>
#include <unistd.h>
#include <vector>

#include "history.hpp"
#include "lariv/lariv.hpp"
#include "test_support.hpp"

#ifndef LARIV_STRESS_GEN_BITS
#define LARIV_STRESS_GEN_BITS 32
#endif

namespace {

using namespace lariv::test;
using clock_type = std::chrono::steady_clock;

std::int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               clock_type::now().time_since_epoch())
        .count();
}

std::uint64_t mix(std::uint64_t x) {
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDULL;
    x ^= x >> 33;
    return x;
}

std::atomic<std::uint64_t> canary_failures{0};
std::atomic<std::uint64_t> exclusivity_failures{0};

/// The element: a unique value, its checksum, a canary and the instruments for get_mut
/// exclusivity. Pad makes the 4 KiB variant; it holds a pattern derived from the value, so a torn
/// or foreign read is detected.
template <std::size_t Pad>
struct elem {
    static constexpr std::uint64_t live_magic = 0x4C41524956414C49ULL;
    static constexpr std::uint64_t dead_magic = 0xDEADDEADDEADDEADULL;

    explicit elem(std::uint64_t v) : value(v), check(mix(v)) {
        for (std::size_t i = 0; i < Pad; ++i) {
            pad[i] = v + i;
        }
        tracked_constructed.fetch_add(1, std::memory_order_relaxed);
    }
    elem(elem&& o) noexcept : value(o.value), check(o.check), mutations(o.mutations) {
        for (std::size_t i = 0; i < Pad; ++i) {
            pad[i] = o.pad[i];
        }
        tracked_constructed.fetch_add(1, std::memory_order_relaxed);
    }
    ~elem() {
        if (magic != live_magic) {
            canary_failures.fetch_add(1);
        }
        magic = dead_magic;
        tracked_destroyed.fetch_add(1, std::memory_order_relaxed);
    }
    /// Reads the value and verifies canary, checksum and pattern. Returns ~0 if any is broken.
    std::uint64_t read() const {
        if (magic != live_magic || check != mix(value)) {
            canary_failures.fetch_add(1);
            return ~std::uint64_t{0};
        }
        for (std::size_t i = 0; i < Pad; i += 64) {
            if (pad[i] != value + i) {
                canary_failures.fetch_add(1);
                return ~std::uint64_t{0};
            }
        }
        return value;
    }

    std::uint64_t magic = live_magic;
    std::uint64_t value;
    std::uint64_t check;
    std::uint64_t mutations = 0;  // plain field written under get_mut: TSan sees a missing lock
    std::atomic<std::uint32_t> owner{0};
    mutable std::atomic<std::int32_t> readers{0};
    std::array<std::uint64_t, Pad> pad{};
};

/// The element of --snapshot runs: trivially copyable (load() copies it), so no canary destructor
/// or instruments; the checksum and the pattern detect a torn or foreign copy.
template <std::size_t Pad>
struct snap_elem {
    explicit snap_elem(std::uint64_t v) : value(v), check(mix(v)) {
        for (std::size_t i = 0; i < Pad; ++i) {
            pad[i] = v + i;
        }
    }
    std::uint64_t read() const {
        if (check != mix(value)) {
            canary_failures.fetch_add(1);
            return ~std::uint64_t{0};
        }
        for (std::size_t i = 0; i < Pad; ++i) {
            if (pad[i] != value + i) {
                canary_failures.fetch_add(1);
                return ~std::uint64_t{0};
            }
        }
        return value;
    }
    std::uint64_t value;
    std::uint64_t check;
    std::array<std::uint64_t, Pad> pad{};
};

struct config {
    unsigned threads = 4;
    std::uint64_t ops = 1'000'000;
    std::uint64_t seed = 0;
    std::size_t cap = 4;
    std::size_t pool = 256;
    bool big = false;
    bool snapshot = false;
    unsigned chaos = 0;
    bool expect_violations = false;
    std::int64_t max_op_ms = 5000;
};

std::atomic<std::uint64_t> g_seed{0};

extern "C" void on_fatal(int sig) {
    // Async-signal-safe: print the seed so the run can be replayed.
    char buf[96];
    std::uint64_t s = g_seed.load();
    char digits[24];
    int n = 0;
    do {
        digits[n++] = static_cast<char>('0' + s % 10);
        s /= 10;
    } while (s != 0);
    int len = 0;
    const char* pre = "\nstress: fatal signal; replay with --seed ";
    while (pre[len] != '\0') {
        buf[len] = pre[len];
        ++len;
    }
    while (n > 0) {
        buf[len++] = digits[--n];
    }
    buf[len++] = '\n';
    (void)!write(2, buf, static_cast<std::size_t>(len));
    std::signal(sig, SIG_DFL);
    std::raise(sig);
}

template <std::size_t Pad, bool Snap>
int run(const config& cfg) {
    using E = std::conditional_t<Snap, snap_elem<Pad>, elem<Pad>>;
    using traits = std::conditional_t<Snap, chaos_snapshot_traits<LARIV_STRESS_GEN_BITS>,
                                      chaos_traits<LARIV_STRESS_GEN_BITS>>;
    using container = lariv::Lariv<E, traits, counting_allocator<E>>;
    const std::int64_t bytes_before = allocated_bytes.load();
    const std::int64_t alive_before = tracked_alive();

    const unsigned nt = cfg.threads;
    const std::uint64_t epoch_ops = std::max<std::uint64_t>(1, std::min<std::uint64_t>(cfg.ops, 1 << 20));
    const std::uint64_t epochs = (cfg.ops + epoch_ops - 1) / epoch_ops;
    const std::uint64_t per_thread = epoch_ops / nt + 1;

    chaos_permille.store(cfg.chaos);
    auto lar = std::make_unique<container>(lariv::Options{.buffer_capacity = cfg.cap,
                                                          .node_id = 7,
                                                          .tag = 42});
    // Pool of event ids (thread << 40 | log position) + 1; 0 = empty.
    std::vector<std::atomic<std::uint64_t>> pool(cfg.pool);
    std::vector<std::unique_ptr<event[]>> logs(nt);
    std::vector<std::uint64_t> log_len(nt, 0);
    for (auto& l : logs) {
        l = std::make_unique<event[]>(per_thread * 2 + 2);  // a push may log its eviction too
    }
    std::atomic<std::uint64_t> progress{0};
    std::atomic<bool> done{false};
    std::barrier sync(static_cast<std::ptrdiff_t>(nt));

    violations total;
    std::uint64_t stale_ops = 0;
    std::uint64_t reuses = 0;
    std::uint64_t pushes = 0;
    std::uint64_t max_gen = 0;
    std::uint64_t total_events = 0;
    std::vector<std::int64_t> lat_sample;
    std::int64_t lat_max = 0;
    bool iteration_ok = true;
    std::size_t buffers_after_first = 0;

    // Watchdog (L7): no progress for 60 s is a hang.
    std::thread watchdog([&] {
        std::uint64_t last = ~std::uint64_t{0};
        int idle = 0;
        while (!done.load()) {
            std::this_thread::sleep_for(std::chrono::milliseconds(200));
            const std::uint64_t p = progress.load();
            idle = (p == last) ? idle + 1 : 0;
            last = p;
            if (idle > 300) {
                std::fprintf(stderr, "stress: no progress for 60 s (hang); seed %llu\n",
                             static_cast<unsigned long long>(cfg.seed));
                std::abort();
            }
        }
    });

    const auto t_start = clock_type::now();
    for (std::uint64_t ep = 0; ep < epochs; ++ep) {
        for (auto& p : pool) {
            p.store(0);
        }
        std::vector<std::thread> ts;
        for (unsigned t = 0; t < nt; ++t) {
            ts.emplace_back([&, t] {
                std::mt19937_64 rng(cfg.seed * 1000003 + ep * 131 + t);
                event* log = logs[t].get();
                std::uint64_t n = 0;
                std::uint64_t seq = 0;
                auto handle_of = [&](std::uint64_t eid) {
                    const std::uint64_t id = eid - 1;
                    return logs[id >> 40][id & ((std::uint64_t{1} << 40) - 1)].handle;
                };
                sync.arrive_and_wait();  // all threads start together
                for (std::uint64_t i = 0; i < per_thread; ++i) {
                    const unsigned r = static_cast<unsigned>(rng() % 100);
                    auto& slot = pool[rng() % pool.size()];
                    event e{};
                    if (r < 35) {
                        const std::uint64_t v = (std::uint64_t{t + 1} << 40) | (ep << 30) | ++seq;
                        e.kind = op_kind::push;
                        e.value = v;
                        e.t_inv = now_ns();
                        e.handle = lar->emplace(v);
                        e.t_resp = now_ns();
                        e.ok = true;
                        log[n] = e;
                        const std::uint64_t eid = ((std::uint64_t{t} << 40) | n) + 1;
                        ++n;
                        // acq_rel: release publishes log[n-1] to whoever takes this id; acquire
                        // makes the evicted id's log entry visible here.
                        const std::uint64_t old = slot.exchange(eid, std::memory_order_acq_rel);
                        if (old == 0) {
                            continue;
                        }
                        e = event{};
                        e.kind = op_kind::remove;
                        e.handle = handle_of(old);
                        e.t_inv = now_ns();
                        e.ok = lar->remove(e.handle);
                        e.t_resp = now_ns();
                    } else {
                        const std::uint64_t eid = slot.load(std::memory_order_acquire);
                        if (eid == 0) {
                            continue;
                        }
                        e.handle = handle_of(eid);
                        if (Snap && r < 82) {
                            // A snapshot read: checked by the history like a get (a stale or
                            // late copy, or a torn one through read()'s checksum).
                            e.kind = op_kind::get;
                            e.t_inv = now_ns();
                            if constexpr (Snap) {
                                if (const auto v = lar->load(e.handle)) {
                                    e.value = v->read();
                                    e.ok = true;
                                }
                            }
                            e.t_resp = now_ns();
                        } else if (r < 70) {
                            e.kind = op_kind::get;
                            e.t_inv = now_ns();
                            if constexpr (!Snap) {
                                if (auto g = lar->get(e.handle)) {
                                    g->readers.fetch_add(1);
                                    if (g->owner.load() != 0) {
                                        exclusivity_failures.fetch_add(1);
                                    }
                                    e.value = g->read();
                                    e.ok = true;
                                    g->readers.fetch_sub(1);
                                }
                            }
                            e.t_resp = now_ns();
                        } else if (r < 82) {
                            e.kind = op_kind::get_mut;
                            e.t_inv = now_ns();
                            if constexpr (!Snap) {
                                if (auto g = lar->get_mut(e.handle)) {
                                    if (g->owner.exchange(t + 1) != 0 || g->readers.load() != 0) {
                                        exclusivity_failures.fetch_add(1);
                                    }
                                    ++g->mutations;
                                    e.value = g->read();
                                    e.ok = true;
                                    if (g->owner.exchange(0) != t + 1) {
                                        exclusivity_failures.fetch_add(1);
                                    }
                                }
                            }
                            e.t_resp = now_ns();
                        } else if (r < 92) {
                            e.kind = op_kind::remove;
                            e.t_inv = now_ns();
                            e.ok = lar->remove(e.handle);
                            e.t_resp = now_ns();
                        } else {
                            e.kind = op_kind::take;
                            e.t_inv = now_ns();
                            if (auto v = lar->take(e.handle)) {
                                e.value = v->read();
                                e.ok = true;
                            }
                            e.t_resp = now_ns();
                        }
                    }
                    log[n++] = e;
                    progress.fetch_add(1, std::memory_order_relaxed);
                }
                log_len[t] = n;
            });
        }
        for (auto& th : ts) {
            th.join();
        }

        // Quiescent: check the epoch's history.
        std::vector<const event*> all;
        for (unsigned t = 0; t < nt; ++t) {
            for (std::uint64_t i = 0; i < log_len[t]; ++i) {
                const event& e = logs[t][i];
                all.push_back(&e);
                const std::int64_t lat = e.t_resp - e.t_inv;
                lat_max = std::max(lat_max, lat);
                if ((i & 63) == 0) {
                    lat_sample.push_back(lat);
                }
                if (e.kind == op_kind::push) {
                    ++pushes;
                    reuses += e.handle.generation() > 1 ? 1 : 0;
                    max_gen = std::max<std::uint64_t>(max_gen, e.handle.generation());
                }
            }
        }
        total_events += all.size();
        history_result res = check_history(all);
        total += res.v;
        stale_ops += res.stale_handle_ops;

        // Check 6: iteration yields exactly the expected live set, and size() agrees.
        std::size_t seen = 0;
        lar->for_each([&](const lariv::Index& idx, const E& e) {
            ++seen;
            auto it = res.live.find(idx);
            if (it == res.live.end() || it->second != e.read()) {
                iteration_ok = false;
            }
        });
        if (seen != res.live.size() || lar->size() != res.live.size()) {
            std::fprintf(stderr, "epoch %llu: iteration saw %zu, size() %zu, expected %zu\n",
                         static_cast<unsigned long long>(ep), seen, lar->size(), res.live.size());
            iteration_ok = false;
        }
        // Empty the container for the next epoch, checking each value once more.
        for (const auto& [idx, v] : res.live) {
            auto taken = lar->take(idx);
            if (!taken || taken->read() != v) {
                iteration_ok = false;
            }
        }
        if (lar->size() != 0) {
            iteration_ok = false;
        }
        if (ep == 0) {
            buffers_after_first = lar->node_count();
        }
    }
    const double secs = std::chrono::duration<double>(clock_type::now() - t_start).count();
    const std::size_t buffers_end = lar->node_count();
    const std::size_t capacity_end = lar->capacity();
    lar.reset();
    done.store(true);
    watchdog.join();

    std::sort(lat_sample.begin(), lat_sample.end());
    auto pct = [&](double q) {
        return lat_sample.empty() ? 0 : lat_sample[static_cast<std::size_t>(q * static_cast<double>(lat_sample.size() - 1))];
    };
    const std::int64_t leaked_objects = tracked_alive() - alive_before;
    const std::int64_t leaked_bytes = allocated_bytes.load() - bytes_before;
    const std::uint64_t gen_limit = (std::uint64_t{1} << LARIV_STRESS_GEN_BITS) - 1;

    std::printf(
        "stress: seed=%llu threads=%u elem=%zuB%s cap=%zu chaos=%u gen_bits=%d\n"
        "  ops=%llu in %.2f s (%.0f ops/s), epochs=%llu\n"
        "  violations: %s | canary=%llu exclusivity=%llu iteration=%s\n"
        "  stale-index ops=%llu, pushes=%llu, slot reuses=%llu (%.1f%%), max generation=%llu\n"
        "  buffers: after epoch 1=%zu, end=%zu (capacity %zu, pool %zu)\n"
        "  leak: objects=%lld bytes=%lld\n"
        "  latency ns: p50=%lld p99=%lld max=%lld\n",
        static_cast<unsigned long long>(cfg.seed), nt, sizeof(E), Snap ? " (snapshot reads)" : "",
        cfg.cap, cfg.chaos,
        LARIV_STRESS_GEN_BITS, static_cast<unsigned long long>(total_events), secs,
        static_cast<double>(total_events) / secs, static_cast<unsigned long long>(epochs),
        total.to_string().c_str(), static_cast<unsigned long long>(canary_failures.load()),
        static_cast<unsigned long long>(exclusivity_failures.load()), iteration_ok ? "ok" : "FAIL",
        static_cast<unsigned long long>(stale_ops), static_cast<unsigned long long>(pushes),
        static_cast<unsigned long long>(reuses),
        pushes ? 100.0 * static_cast<double>(reuses) / static_cast<double>(pushes) : 0.0,
        static_cast<unsigned long long>(max_gen), buffers_after_first, buffers_end, capacity_end,
        cfg.pool, static_cast<long long>(leaked_objects), static_cast<long long>(leaked_bytes),
        static_cast<long long>(pct(0.5)), static_cast<long long>(pct(0.99)),
        static_cast<long long>(lat_max));

    const bool found = total.total() != 0 || canary_failures.load() != 0 || !iteration_ok;
    bool failed = found || exclusivity_failures.load() != 0;
    if (leaked_objects != 0 || leaked_bytes != 0) {
        std::printf("FAIL: leak\n");
        failed = true;
    }
    if (lat_max > cfg.max_op_ms * 1'000'000) {
        std::printf("FAIL: an operation took %lld ms (bound %lld ms): progress (L7)\n",
                    static_cast<long long>(lat_max / 1'000'000), static_cast<long long>(cfg.max_op_ms));
        failed = true;
    }
    if (max_gen > gen_limit) {
        std::printf("FAIL: generation %llu beyond %d bits\n", static_cast<unsigned long long>(max_gen),
                    LARIV_STRESS_GEN_BITS);
        failed = true;
    }
    // Buffers stay bounded under churn (L6): live elements never exceed pool + threads, so the
    // ring needs only a share of that set by the growth rule (30% freed per lap: about 1.5x, with
    // a slow ratchet from noisy laps), plus one claim batch per thread.
    const std::size_t live_bound = cfg.pool + nt;
    const std::size_t cap_bound = 3 * live_bound + 64 * nt + 2 * cfg.cap;
    if (capacity_end > cap_bound) {
        std::printf("FAIL: capacity %zu above bound %zu under churn (L6)\n", capacity_end, cap_bound);
        failed = true;
    }
    if (!cfg.expect_violations && pushes > 1000 && reuses * 10 < pushes) {
        std::printf("FAIL: slot reuse %llu below 10%% of pushes: the test did not exercise reuse\n",
                    static_cast<unsigned long long>(reuses));
        failed = true;
    }
    if (cfg.expect_violations) {
        std::printf(found ? "mutant caught: violations found as expected\n"
                          : "FAIL: mutant not caught: the checker found nothing\n");
        return found ? 0 : 1;
    }
    std::printf(failed ? "FAIL\n" : "PASS\n");
    return failed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
    config cfg;
    cfg.seed = std::random_device{}();
    if (const char* env = std::getenv("LARIV_STRESS_OPS")) {
        cfg.ops = std::strtoull(env, nullptr, 10);
    }
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto next = [&]() -> std::uint64_t {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "missing value for %s\n", a.c_str());
                std::exit(64);
            }
            return std::strtoull(argv[++i], nullptr, 10);
        };
        if (a == "--threads") {
            cfg.threads = static_cast<unsigned>(std::max<std::uint64_t>(1, next()));
        } else if (a == "--ops") {
            cfg.ops = next();
        } else if (a == "--seed") {
            cfg.seed = next();
        } else if (a == "--cap") {
            cfg.cap = static_cast<std::size_t>(std::max<std::uint64_t>(1, next()));
        } else if (a == "--pool") {
            cfg.pool = static_cast<std::size_t>(std::max<std::uint64_t>(1, next()));
        } else if (a == "--chaos") {
            cfg.chaos = static_cast<unsigned>(next());
        } else if (a == "--max-op-ms") {
            cfg.max_op_ms = static_cast<std::int64_t>(next());
        } else if (a == "--big") {
            cfg.big = true;
        } else if (a == "--snapshot") {
            cfg.snapshot = true;
        } else if (a == "--expect-violations") {
            cfg.expect_violations = true;
        } else {
            std::fprintf(stderr, "unknown argument %s\n", a.c_str());
            return 64;
        }
    }
    g_seed.store(cfg.seed);
    std::signal(SIGSEGV, on_fatal);
    std::signal(SIGABRT, on_fatal);
    std::printf("stress: seed %llu (replay with --seed %llu)\n",
                static_cast<unsigned long long>(cfg.seed), static_cast<unsigned long long>(cfg.seed));
    std::fflush(stdout);
    if (cfg.snapshot) {
        return cfg.big ? run<508, true>(cfg) : run<0, true>(cfg);
    }
    return cfg.big ? run<508, false>(cfg) : run<0, false>(cfg);
}
