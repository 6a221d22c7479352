// lariv/server/detail/counters.hpp — counters and histograms that every I/O thread writes without
// sharing a cache line per event: each is split into stripes of one cache line each, a thread
// writes only its own stripe, and a reader (STATS, /metrics, tests) sums the stripes.
//
// Why: a registry-wide counter written per routed message by every I/O thread bounces its cache
// line between cores; at 3.4 M msgs/s on 2 cores that was ~25% of larivd's CPU (issue 11), and on
// 16 cores it becomes the ceiling. With stripes, the routing path's writes stay in lines the
// writing thread owns (server/DESIGN.md, "Cache lines on the routing path").
//
// Stripe choice: a thread takes the next stripe index, modulo `stripes`, the first time it counts
// anything, and keeps it. Up to `stripes` threads never share a line; past that two threads may
// share one (still correct: every write is an atomic read-modify-write).
//
// Memory order: relaxed everywhere. A counter is a statistic: a reader's sum is some value between
// the counts before and after the increments racing with it, and because each stripe only grows, a
// later sum is never below an earlier one read by the same thread (each stripe's load is
// coherence-ordered), so Prometheus' "counters never go down" holds.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <initializer_list>

namespace lariv::server::detail {

inline constexpr std::size_t counter_stripes = 32;
inline constexpr std::size_t cache_line = 64;

/// This thread's stripe index, 0..counter_stripes-1 (fixed for the thread's life).
inline std::size_t this_thread_stripe() noexcept {
    static std::atomic<std::size_t> next{0};
    thread_local const std::size_t mine = next.fetch_add(1, std::memory_order_relaxed) % counter_stripes;
    return mine;
}

/// A monotonic counter in stripes. Drop-in for the std::atomic<std::uint64_t> counters it replaced:
/// fetch_add() and load() (the memory-order arguments are accepted and ignored: always relaxed).
class sharded_counter {
public:
    sharded_counter() = default;
    sharded_counter(const sharded_counter&) = delete;
    sharded_counter& operator=(const sharded_counter&) = delete;

    void fetch_add(std::uint64_t n, std::memory_order = std::memory_order_relaxed) noexcept {
        cells_[this_thread_stripe()].v.fetch_add(n, std::memory_order_relaxed);
    }
    [[nodiscard]] std::uint64_t load(std::memory_order = std::memory_order_relaxed) const noexcept {
        std::uint64_t sum = 0;
        for (const cell& c : cells_) {
            sum += c.v.load(std::memory_order_relaxed);
        }
        return sum;
    }

private:
    struct alignas(cache_line) cell {
        std::atomic<std::uint64_t> v{0};
    };
    std::array<cell, counter_stripes> cells_{};
};

/// A latency histogram in stripes, with fixed bucket bounds (seconds, as Prometheus expects),
/// from 1 us to 10 s in 1-2.5-5 steps. observe() is a bounded scan of 22 bounds and three
/// relaxed adds to this thread's stripe; snapshot() sums the stripes.
class latency_histogram {
public:
    static constexpr std::size_t bounds = 22;
    /// Upper bounds in nanoseconds (bucket i counts values <= bound_ns[i]; the last, +Inf, the rest).
    static constexpr std::array<std::uint64_t, bounds> bound_ns{
        1'000,         2'500,         5'000,         10'000,         25'000,        50'000,
        100'000,       250'000,       500'000,       1'000'000,      2'500'000,     5'000'000,
        10'000'000,    25'000'000,    50'000'000,    100'000'000,    250'000'000,   500'000'000,
        1'000'000'000, 2'500'000'000, 5'000'000'000, 10'000'000'000};

    latency_histogram() = default;
    latency_histogram(const latency_histogram&) = delete;
    latency_histogram& operator=(const latency_histogram&) = delete;

    void observe_ns(std::uint64_t ns) noexcept {
        std::size_t b = 0;
        while (b < bounds && ns > bound_ns[b]) {
            ++b;
        }
        stripe& s = stripes_[this_thread_stripe()];
        s.buckets[b].fetch_add(1, std::memory_order_relaxed);
        s.sum_ns.fetch_add(ns, std::memory_order_relaxed);
    }

    struct snapshot_t {
        std::array<std::uint64_t, bounds + 1> buckets{};  ///< per bucket, not cumulative; [bounds] = +Inf
        std::uint64_t count = 0;
        std::uint64_t sum_ns = 0;
    };
    [[nodiscard]] snapshot_t snapshot() const noexcept {
        snapshot_t out;
        for (const stripe& s : stripes_) {
            for (std::size_t b = 0; b <= bounds; ++b) {
                const std::uint64_t v = s.buckets[b].load(std::memory_order_relaxed);
                out.buckets[b] += v;
                out.count += v;
            }
            out.sum_ns += s.sum_ns.load(std::memory_order_relaxed);
        }
        return out;
    }

private:
    struct alignas(cache_line) stripe {
        std::array<std::atomic<std::uint64_t>, bounds + 1> buckets{};
        std::atomic<std::uint64_t> sum_ns{0};
    };
    std::array<stripe, counter_stripes> stripes_{};
};

}  // namespace lariv::server::detail
