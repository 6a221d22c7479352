// tests/lariv/test_support.hpp — instruments for the Lariv tests: a yield-injecting atomic, a
// counting allocator, a tracked element type and test traits.
#pragma once

#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <thread>

#include "lariv/lariv.hpp"

namespace lariv::test {

// ------------------------------------------------------------------------------ chaos atomic
/// Per-mille probability that an atomic operation first yields the CPU (the cheap cousin of
/// folly's DeterministicSchedule): widens race windows on a 2-core machine. 0 = off.
inline std::atomic<unsigned> chaos_permille{0};

inline void chaos_point() noexcept {
    const unsigned p = chaos_permille.load(std::memory_order_relaxed);  // relaxed: a knob
    if (p == 0) {
        return;
    }
    thread_local std::uint64_t x =
        0x9E3779B97F4A7C15ULL ^ std::hash<std::thread::id>{}(std::this_thread::get_id());
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    if (x % 1000 < p) {
        std::this_thread::yield();
    }
}

/// Drop-in for std::atomic<U> as Lariv uses it, with a chaos point before every operation.
template <class U>
class chaos_atomic {
public:
    chaos_atomic() noexcept : a_(U{}) {}
    chaos_atomic(U v) noexcept : a_(v) {}  // NOLINT(google-explicit-constructor): as std::atomic
    chaos_atomic(const chaos_atomic&) = delete;
    chaos_atomic& operator=(const chaos_atomic&) = delete;

    U load(std::memory_order o) const noexcept {
        chaos_point();
        return a_.load(o);
    }
    void store(U v, std::memory_order o) noexcept {
        chaos_point();
        a_.store(v, o);
    }
    bool compare_exchange_weak(U& e, U d, std::memory_order s, std::memory_order f) noexcept {
        chaos_point();
        return a_.compare_exchange_weak(e, d, s, f);
    }
    bool compare_exchange_strong(U& e, U d, std::memory_order s, std::memory_order f) noexcept {
        chaos_point();
        return a_.compare_exchange_strong(e, d, s, f);
    }
    U fetch_add(U d, std::memory_order o) noexcept
        requires std::integral<U>
    {
        chaos_point();
        return a_.fetch_add(d, o);
    }
    U fetch_sub(U d, std::memory_order o) noexcept
        requires std::integral<U>
    {
        chaos_point();
        return a_.fetch_sub(d, o);
    }

private:
    std::atomic<U> a_;
};

template <unsigned GenBits = 32>
struct chaos_traits {
    template <class U>
    using atomic = chaos_atomic<U>;
    static constexpr unsigned generation_bits = GenBits;
    static constexpr std::size_t lanes = 64;
};
/// chaos_traits with snapshot reads (load(); no get_mut).
template <unsigned GenBits = 32>
struct chaos_snapshot_traits : chaos_traits<GenBits> {
    static constexpr bool snapshot_reads = true;
};


// -------------------------------------------------------------------------- counting allocator
inline std::atomic<std::int64_t> allocated_bytes{0};
inline std::atomic<std::int64_t> allocations{0};

/// std::allocator plus a global count of bytes outstanding (oneTBB's LocalCountingAllocator).
template <class T>
struct counting_allocator {
    using value_type = T;
    counting_allocator() noexcept = default;
    template <class U>
    counting_allocator(const counting_allocator<U>&) noexcept {}  // NOLINT: rebinding
    T* allocate(std::size_t n) {
        allocated_bytes.fetch_add(static_cast<std::int64_t>(n * sizeof(T)));
        allocations.fetch_add(1);
        return std::allocator<T>{}.allocate(n);
    }
    void deallocate(T* p, std::size_t n) noexcept {
        allocated_bytes.fetch_sub(static_cast<std::int64_t>(n * sizeof(T)));
        std::allocator<T>{}.deallocate(p, n);
    }
    template <class U>
    bool operator==(const counting_allocator<U>&) const noexcept {
        return true;
    }
};

// ------------------------------------------------------------------------------ tracked type
inline std::atomic<std::int64_t> tracked_constructed{0};
inline std::atomic<std::int64_t> tracked_destroyed{0};
inline std::atomic<std::int64_t> tracked_bad{0};  // use of a dead or foreign object

/// Counts constructions and destructions and carries a canary checked on every use.
struct tracked {
    static constexpr std::uint64_t live_magic = 0x4C41524956414C49ULL;
    static constexpr std::uint64_t dead_magic = 0xDEADDEADDEADDEADULL;

    explicit tracked(std::uint64_t v = 0) : value(v) { tracked_constructed.fetch_add(1); }
    tracked(const tracked& o) : value(o.checked()) { tracked_constructed.fetch_add(1); }
    tracked(tracked&& o) noexcept : value(o.checked()) { tracked_constructed.fetch_add(1); }
    tracked& operator=(const tracked&) = delete;
    ~tracked() {
        if (magic != live_magic) {
            tracked_bad.fetch_add(1);  // destroyed twice, or never constructed
        }
        magic = dead_magic;
        tracked_destroyed.fetch_add(1);
    }
    std::uint64_t checked() const noexcept {
        if (magic != live_magic) {
            tracked_bad.fetch_add(1);
        }
        return value;
    }

    std::uint64_t magic = live_magic;
    std::uint64_t value;
};

inline std::int64_t tracked_alive() {
    return tracked_constructed.load() - tracked_destroyed.load();
}

}  // namespace lariv::test
