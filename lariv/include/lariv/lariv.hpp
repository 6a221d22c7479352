// lariv/lariv.hpp — Lariv, the Linked Atomic Random Insert Vector: a thread-safe, lock-free,
// growable slot vector. Header-only; needs the C++20 standard library alone.
//
// ================================================================================================
// CONTRACT
// ================================================================================================
// Model
//   A Lariv<T> holds elements in fixed-size buffers of `buffer_capacity` slots. Buffers are
//   allocated as needed and linked into a directory whose segments are never moved, copied or
//   reallocated, so an element's address is stable for its whole life, and a lookup reaches its
//   slot in O(1) (no walk over buffers). Any element can be removed without moving others.
//   push() returns a 128-bit lariv::Index (see index.hpp): this container's node id and tag, the
//   slot's generation and the slot number. A slot's generation changes each time the slot is freed,
//   so an index that outlived its element never reaches a newer one.
//
// Per-operation guarantees (all are safe to call from any number of threads at once)
//   push / emplace / try_push / try_emplace
//       Lock-free. Allocates only when a new buffer is linked; exactly one thread links each new
//       buffer and other inserters wait at most for that one allocation. Linearization point: the
//       release store that makes the slot LIVE. try_* returns std::nullopt when the container is
//       full and cannot grow (max_buffers reached); push/emplace throw lariv::capacity_error then.
//       If T's constructor throws, the slot goes back to free and the exception propagates.
//   get(index)       -> ReadGuard  shared: any number of ReadGuards on one element at once.
//   get_mut(index)   -> WriteGuard exclusive (not with snapshot reads, below).
//       Lock-free when uncontended; they wait (spin, then yield) only while a conflicting guard is
//       held on the same element (a WriteGuard for get; any guard for get_mut). Empty guard for a
//       stale, removed, out-of-range, other-node or forged index. While a guard lives, its element
//       is not destroyed.
//   remove(index) -> bool
//       Lock-free, never waits. Of several threads removing (or taking) the same index, exactly
//       one gets true (or the value; a take whose move throws wins nothing, see take). If guards
//       are held, the element becomes unreachable at once (new lookups fail) and its destruction
//       is deferred: the thread that releases the last guard runs ~T.
//   load(index) -> std::optional<T>, load(index, T& out) -> bool
//                    (only when Traits::snapshot_reads, e.g. SnapshotTraits)
//       A copy of the element, or std::nullopt (false). Lock-free and wait-free; it writes nothing, so
//       any number of threads read one element without moving its cache line. T must be trivially
//       copyable; the container then writes an element only in its constructor, get_mut does not
//       exist, and a value never changes while it is live. The copy is taken with relaxed atomic
//       loads between two loads of the slot word and kept only if the generation did not change
//       ([P9] in detail/slot.hpp): it is always one whole value that was live at the first load
//       (its linearization point), never a torn one or a newer element's. It does not keep the
//       element alive: unlike a guard it holds nothing, and a remove() meanwhile is not delayed.
//       A move-only handle to a live object (a shared_ptr, a session) wants a guard instead.
//   take(index) -> std::optional<T>
//       Exactly one of several removers/takers of an index wins. The element becomes unreachable
//       at once; the taker then waits for guards that were already held to be released, and moves
//       the value out. Strong guarantee: if T's move constructor throws, the element is put back
//       at the same index (same generation) as the move constructor left it (unchanged if that
//       constructor has the strong guarantee itself), no removal is counted, and the exception
//       propagates. While the take runs, others see the element absent: a get/contains/remove/take
//       of it meanwhile misses, and one that misses is not retried when the element comes back.
//       (Calling take() while this thread holds a guard on that element deadlocks: see below.)
//   for_each(f, first_slot = 0)
//       Visits live elements in slot order, each under a ReadGuard, while others push and remove.
//       Weakly consistent: an element present for the whole walk is visited exactly once; one
//       pushed or removed meanwhile may or may not be. f may return bool (false stops the walk).
//   size() is approximate under concurrency (exact when quiescent); capacity(), node_capacity(),
//   node_count() are exact snapshots of monotonic values.
//   The destructor destroys every live element and frees every buffer; it needs quiescence (no
//   concurrent call, no guard alive).
//   Any thread may use a container at any time of its life, including from thread_local and
//   static destructors at thread or process exit (see I11).
//
// Self-deadlocks (the caller's error; they spin forever in release builds)
//   A thread must not wait for a guard it holds itself:
//     - get_mut(i) (or take(i)) on the element that this thread's for_each is visiting (its
//       ReadGuard is held while f runs);
//     - get(i), get_mut(i) or for_each reaching an element while this thread holds a WriteGuard
//       on it; get_mut(i) while this thread holds a ReadGuard on it;
//     - take(i) while this thread holds any guard on that element.
//   Debug builds (NDEBUG not defined) detect these when the wait begins and fail an assert whose
//   message starts "lariv: self-deadlock:" and names the call. They keep a small thread_local
//   record of the slots this thread holds guards on or visits (detail::held_slots); with NDEBUG
//   it does not exist and the paths are unchanged. The record assumes a guard is released by
//   the thread that took it (see held_slots for what a guard handed between threads does).
//
// Non-guarantees
//   - Iteration is not a snapshot; size() is not linearizable.
//   - Indexes are not ordered by insertion time; slots are reused.
//   - ABA-safety is bounded: with G generation bits (32 by default), an index could reach a newer
//     element only after its slot was reused 2^G - 1 times while the index was held.
//   - Buffers are never freed before the container: memory tracks the peak element count.
//   - A remover or the last guard holder may run ~T; T's destructor must not throw.
//
// Growth policy (the original's "smart insert", made tunable via Options)
//   A shared sweep cursor walks the ring of buffers handing out claim batches of `claim_batch`
//   slots; each thread sweeps its own batch and reuses freed slots. At the end of a lap a new
//   buffer is linked only if fewer than `min_freed_ratio` x capacity slots were freed during the
//   lap (default 0.3, the original's 30%), or if this push swept two whole laps without finding a
//   free slot (the ring is full). Otherwise the cursor wraps and a new lap begins.
//
// Invariants: I1-I6 of the slot protocol are stated in detail/slot.hpp. Container invariants:
//   I7  Buffer b is published in the directory ([G1] release) before nbuf_ counts it ([G3]); a
//       thread that read nbuf_ ([G4] acquire) >= b+1 can use buffer b.
//   I8  Directory segments and buffers are never moved or freed before the destructor.
//   I9  Exactly one thread links buffer number n: the one whose CAS set the growing bit on nbuf_
//       while it held n.
//   I10 The sweep cursor and the per-lane hints only steer the search; ownership of a slot is
//       decided by the CAS in slot_protocol::try_claim alone, so stale hints are harmless.
//   I11 An owned lane (lane[n], n < lanes - 1) has one writer of its counters at a time: the one
//       live holder of thread number n. A thread's number state (detail::tls_thread_number) is
//       constant-initialised and trivially destructible, so it is valid until the thread ends,
//       whatever the destruction order of its other thread_locals, and it only moves forward:
//       unnumbered -> n -> released. A thread hands n back at exit and then, if it still uses a
//       Lariv (thread_local destructors that run later), it uses the shared lane with atomic adds
//       and never takes a number again. [T1] (thread_numbers' mutex) orders the bumps of
//       successive holders of one number.
//
// Synchronisation pairs: [P1]-[P8] are in detail/slot.hpp ([P8]: take's revive). Container:
//   [G1] directory entry store (release) -> [G2] lookup (acquire); [G3] buffer count (release) ->
//   [G4] sweep (acquire); [T1] thread_numbers mutex: release() -> a later acquire() of the number.
// ================================================================================================
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

#include "lariv/detail/backoff.hpp"
#include "lariv/detail/slot.hpp"
#include "lariv/index.hpp"

namespace lariv {

/// Construction options. All have defaults; see the growth policy in the contract above.
struct Options {
    /// Elements per buffer. 0 = automatic: 1024, or fewer for large elements so that a buffer
    /// stays near 512 KiB (a power of two, at least 16): 64 for 4 KiB elements.
    std::size_t buffer_capacity = 0;
    std::size_t max_buffers = 0;         ///< cap on buffers; 0 = as many as 32-bit slots allow
    std::uint32_t node_id = 0;           ///< stamped in every Index (bits 127..96)
    std::uint32_t tag = 0;               ///< stamped in every Index (bits 95..64), e.g. boot epoch
    double min_freed_ratio = 0.3;        ///< growth rule: link when fewer were freed in a lap
    std::size_t claim_batch = 64;        ///< slots a thread takes from the shared cursor at once
};

/// Policy parameters, mostly for tests: the atomic template (std::atomic, a relacy adapter, or a
/// yield-injecting wrapper), the generation width and the number of per-thread lanes (threads
/// numbered below lanes - 1 own a lane; the others share the last one).
struct DefaultTraits {
    template <class U>
    using atomic = std::atomic<U>;
    static constexpr unsigned generation_bits = 32;
    static constexpr std::size_t lanes = 64;
    /// true: load() (a write-free copy) is offered and get_mut() is not; T must be trivially
    /// copyable. See load() in the contract.
    static constexpr bool snapshot_reads = false;
};

/// DefaultTraits with snapshot reads: Lariv<T, SnapshotTraits> offers load(), a copy of an element
/// that writes nothing, for trivially copyable T (ids, handles, small records).
struct SnapshotTraits : DefaultTraits {
    static constexpr bool snapshot_reads = true;
};

/// Thrown by push/emplace when the container is full and max_buffers forbids growth.
class capacity_error : public std::length_error {
public:
    using std::length_error::length_error;
};

namespace detail {
/// Traits::snapshot_reads, false where a Traits type does not name it.
template <class Tr>
constexpr bool snapshot_reads_of() noexcept {
    if constexpr (requires { Tr::snapshot_reads; }) {
        return Tr::snapshot_reads;
    } else {
        return false;
    }
}

/// Small per-thread numbers, handed out at a thread's first use of any Lariv and taken back when
/// the thread exits, so the live threads of a process hold distinct numbers 0, 1, 2, ... and a
/// thread owns lane[number] of every container exclusively (while number < lanes - 1).
///
/// [T1] The mutex orders a number's owners: the previous owner's plain load + store bumps of its
/// lane counters (all before its release(), in program order) happen-before the next owner's,
/// which come after its acquire() of the same number.
class thread_numbers {
public:
    std::size_t acquire() {
        std::lock_guard lk(mu_);
        if (!free_.empty()) {
            const std::size_t n = free_.back();
            free_.pop_back();
            return n;
        }
        const std::size_t n = next_++;
        free_.reserve(next_);  // release() then never allocates (it runs in a destructor)
        return n;
    }
    void release(std::size_t n) noexcept {
        std::lock_guard lk(mu_);
        free_.push_back(n);  // capacity was reserved by acquire(): no allocation, no throw
    }
    /// Never destroyed: a thread may exit after static destructors ran.
    static thread_numbers& instance() {
        static auto* t = new thread_numbers;  // NOLINT(cppcoreguidelines-owning-memory)
        return *t;
    }

private:
    std::mutex mu_;
    std::vector<std::size_t> free_;
    std::size_t next_ = 0;
};

/// This thread's number, or one of two markers. The variable is constant-initialised and
/// trivially destructible, so it is valid for the thread's whole life, whatever the order in
/// which the thread's other thread_local objects are destroyed (it is never "destroyed" before
/// them). Its life: unnumbered -> a number (first use) -> released (thread exit; final).
inline constexpr std::size_t unnumbered = ~std::size_t{0};
/// After this thread handed its number back: it uses the shared lane (any value >= lanes - 1
/// does) with atomic adds, and never takes a number again.
inline constexpr std::size_t released_number = ~std::size_t{0} - 1;
inline constinit thread_local std::size_t tls_thread_number = unnumbered;

/// Hands the number back at thread exit. It is constructed at the thread's first use of a Lariv,
/// so thread_local objects constructed earlier are destroyed after it; those that use a Lariv in
/// their destructors then find `released_number` and use the shared lane. Before this fix, they
/// kept using the handed-back number, which a newly started thread could hold at the same time:
/// two threads on one owned lane, whose load + store bumps lose increments.
struct thread_number_releaser {
    thread_number_releaser() = default;
    thread_number_releaser(const thread_number_releaser&) = delete;
    thread_number_releaser& operator=(const thread_number_releaser&) = delete;
    ~thread_number_releaser() {
        const std::size_t n = tls_thread_number;
        tls_thread_number = released_number;  // first: from here on, the shared lane
        if (n != unnumbered && n != released_number) {
            thread_numbers::instance().release(n);
        }
    }
};

/// The slow path of this_thread_number: once per thread.
[[gnu::noinline]] inline std::size_t take_thread_number() {
    // Registered first, so that the number taken below is handed back at thread exit. (A thread
    // whose first use of a Lariv is itself in a thread_local destructor still gets its releaser
    // run: the C++ runtime runs destructors registered while the thread's destructors run.)
    thread_local const thread_number_releaser releaser;
    (void)releaser;
    if (tls_thread_number == unnumbered) {
        tls_thread_number = thread_numbers::instance().acquire();
    }
    return tls_thread_number;
}

/// This thread's number (see thread_numbers), or released_number once it was handed back at
/// thread exit. Taken once per thread, under a mutex; afterwards one thread-local load.
inline std::size_t this_thread_number() noexcept {
    const std::size_t n = tls_thread_number;
    if (n != unnumbered) [[likely]] {
        return n;
    }
    try {
        return take_thread_number();
    } catch (...) {  // no memory for the number registry: the shared lane is always correct
        return released_number;
    }
}

#ifndef NDEBUG
/// Debug builds only (compiled out with NDEBUG): the slots this thread holds guards on or is
/// visiting in for_each, so that a wait that only this thread could end is reported by an assert
/// instead of spinning forever (see "Self-deadlocks" in the contract). Keyed by the slot word's
/// address, unique among the slots of all live containers, and the element's generation. It is
/// constant-initialised and trivially destructible, like tls_thread_number, so guards released by
/// thread_local destructors find it intact. Only this thread reads or writes it: no
/// synchronisation. It tracks up to 16 slots; guards beyond are not tracked (a self-deadlock on
/// them is then missed, never falsely reported). It assumes a guard is released by the thread
/// that took it: a guard handed to another thread and released there leaves this thread's entry
/// behind, and a wait of this thread on that same element while another thread holds a conflicting
/// guard on it would be reported as a self-deadlock. (Once the element is gone the generation no
/// longer matches and the stale entry is ignored.)
struct held_slots {
    enum kind : unsigned { reader = 0, writer = 1, visit = 2 };
    struct entry {
        const void* word;
        std::uint32_t gen;
        std::uint32_t count[3];
    };
    static constexpr std::size_t capacity = 16;
    entry e[capacity];
    std::size_t n;

    entry* find(const void* w) noexcept {
        for (std::size_t k = 0; k < n; ++k) {
            if (e[k].word == w) {
                return &e[k];
            }
        }
        return nullptr;
    }
    void add(const void* w, std::uint32_t g, kind k) noexcept {
        entry* x = find(w);
        if (x == nullptr) {
            if (n == capacity) {
                return;  // untracked
            }
            x = &e[n++];
            *x = entry{w, g, {0, 0, 0}};
        } else if (x->gen != g) {
            *x = entry{w, g, {0, 0, 0}};  // a stale entry (its guard was released elsewhere)
        }
        ++x->count[k];
    }
    void drop(const void* w, kind k) noexcept {
        entry* x = find(w);
        if (x == nullptr || x->count[k] == 0) {
            return;  // untracked (the record was full, or the guard came from another thread)
        }
        if (--x->count[k] == 0 && x->count[0] + x->count[1] + x->count[2] == 0) {
            *x = e[--n];
        }
    }
    std::uint32_t holds(const void* w, std::uint32_t g, kind k) noexcept {
        const entry* x = find(w);
        return x == nullptr || x->gen != g ? 0 : x->count[k];
    }
};
inline constinit thread_local held_slots tls_held_slots{};
#endif
}  // namespace detail

/// What an index names at the moment of the call (Lariv::status).
enum class IndexStatus {
    live,          ///< a live element
    ended,         ///< issued by this container; its element has been removed (slot free or reused)
    never_issued,  ///< foreign (other node/tag), out of range, or a generation not issued yet
};

template <class T, class Traits = DefaultTraits, class Allocator = std::allocator<T>>
class Lariv {
    template <class U>
    using atomic_t = typename Traits::template atomic<U>;
    using word_t = detail::word_t;
    using word_atomic = atomic_t<word_t>;
    using protocol = detail::slot_protocol<word_atomic, Traits::generation_bits>;

    static_assert(std::is_nothrow_destructible_v<T>, "T's destructor must not throw");
    static_assert(alignof(T) <= 64, "over-aligned element types are not supported");
    static_assert(Traits::lanes >= 1, "at least the shared lane");

    /// Small elements sit beside their slot word (a lookup touches one cache line); large ones
    /// live apart from the words, so the insertion sweep reads 8 words per cache line.
    static constexpr bool inline_values = sizeof(T) <= 56;

    /// Snapshot reads ([P9]): values are stored and copied in chunks of relaxed atomic accesses.
    /// Inline values start 8-aligned in a stride that is a multiple of 8, so they use 8-byte
    /// chunks over sizeof(T) rounded up (the rest of the stride is the slot's own padding);
    /// separate values sit sizeof(T) apart, so the chunk is the largest power of two dividing it.
    static constexpr bool snapshot_reads = detail::snapshot_reads_of<Traits>();
    static_assert(!snapshot_reads || std::is_trivially_copyable_v<T>,
                  "snapshot reads copy the value's bytes: T must be trivially copyable");
    static constexpr std::size_t snap_chunk = inline_values          ? 8
                                              : sizeof(T) % 8 == 0 ? 8
                                              : sizeof(T) % 4 == 0 ? 4
                                              : sizeof(T) % 2 == 0 ? 2
                                                                     : 1;
    static constexpr std::size_t snap_bytes = (sizeof(T) + snap_chunk - 1) / snap_chunk * snap_chunk;
    using snap_chunk_t =
        std::conditional_t<snap_chunk == 8, std::uint64_t,
                           std::conditional_t<snap_chunk == 4, std::uint32_t,
                                              std::conditional_t<snap_chunk == 2, std::uint16_t,
                                                                 std::uint8_t>>>;

    struct alignas(64) block {
        std::byte bytes[64];
    };
    using block_alloc = typename std::allocator_traits<Allocator>::template rebind_alloc<block>;
    using block_traits = std::allocator_traits<block_alloc>;
    using entry_atomic = atomic_t<std::byte*>;
    using entry_alloc =
        typename std::allocator_traits<Allocator>::template rebind_alloc<entry_atomic>;
    using entry_traits = std::allocator_traits<entry_alloc>;

    static constexpr std::size_t seg0_bits = 6;  // directory segment k holds 64 << k buffers
    static constexpr std::size_t max_segments = 27;
    static constexpr std::uint64_t growing_bit = std::uint64_t{1} << 63;
    static constexpr std::uint64_t max_slots = 0xFFFF'FFFFULL;  // slot numbers are 32 bits

public:
    using value_type = T;
    using allocator_type = Allocator;

    /// A guard on one element: shared (ReadGuard, const access) or exclusive (WriteGuard).
    /// Move-only. Empty when the lookup failed. Releasing the last guard of a removed element
    /// destroys it. Not thread-safe itself: one guard object belongs to one thread at a time.
    template <bool Exclusive>
    class basic_guard {
    public:
        using reference = std::conditional_t<Exclusive, T&, const T&>;
        using pointer = std::conditional_t<Exclusive, T*, const T*>;

        basic_guard() noexcept = default;
        basic_guard(basic_guard&& o) noexcept
            : word_(std::exchange(o.word_, nullptr))
            , value_(std::exchange(o.value_, nullptr)) {}
        basic_guard& operator=(basic_guard&& o) noexcept {
            if (this != &o) {
                reset();
                word_ = std::exchange(o.word_, nullptr);
                value_ = std::exchange(o.value_, nullptr);
            }
            return *this;
        }
        basic_guard(const basic_guard&) = delete;
        basic_guard& operator=(const basic_guard&) = delete;
        ~basic_guard() { reset(); }

        explicit operator bool() const noexcept { return word_ != nullptr; }
        reference operator*() const noexcept { return *value_; }
        pointer operator->() const noexcept { return value_; }
        pointer get() const noexcept { return value_; }

        /// Releases the guard now (destroying the element if it was removed and this was the last).
        void reset() noexcept {
            if (word_ != nullptr) {
#ifndef NDEBUG
                detail::tls_held_slots.drop(word_, Exclusive ? detail::held_slots::writer
                                                             : detail::held_slots::reader);
#endif
                if (protocol::unpin(*word_, Exclusive)) {
                    destroy_slot(*word_, value_);  // I4: the last pin of a DEAD slot destroys
                }
                word_ = nullptr;
                value_ = nullptr;
            }
        }

    private:
        friend class Lariv;
        basic_guard(word_atomic* w, T* v, [[maybe_unused]] std::uint32_t g) noexcept
            : word_(w)
            , value_(v) {
#ifndef NDEBUG
            detail::tls_held_slots.add(w, g, Exclusive ? detail::held_slots::writer
                                                       : detail::held_slots::reader);
#endif
        }
        word_atomic* word_ = nullptr;
        T* value_ = nullptr;
    };
    using ReadGuard = basic_guard<false>;
    using WriteGuard = basic_guard<true>;

    /// Creates a container with one buffer. Throws std::invalid_argument for bad options.
    explicit Lariv(const Options& opt = {}, const Allocator& alloc = Allocator())
        : blocks_(alloc)
        , entries_(alloc)
        , cap_(opt.buffer_capacity != 0 ? opt.buffer_capacity : auto_capacity())
        , hi_((std::uint64_t{opt.node_id} << 32) | opt.tag)
        , batch_(std::max<std::size_t>(1, opt.claim_batch))
        , min_freed_ratio_(opt.min_freed_ratio) {
        if (cap_ > (std::size_t{1} << 31)) {
            throw std::invalid_argument("lariv: buffer_capacity must be at most 2^31");
        }
        if (!(opt.min_freed_ratio >= 0.0 && opt.min_freed_ratio <= 1.0)) {
            throw std::invalid_argument("lariv: min_freed_ratio must be in [0, 1]");
        }
        const std::uint64_t dir_limit = (std::uint64_t{1} << (seg0_bits + max_segments)) - 64;
        max_buffers_ = std::min<std::uint64_t>(max_slots / cap_, dir_limit);
        if (opt.max_buffers != 0) {
            max_buffers_ = std::min<std::uint64_t>(max_buffers_, opt.max_buffers);
        }
        if (std::has_single_bit(cap_)) {
            cap_shift_ = static_cast<unsigned>(std::countr_zero(cap_));
            cap_pow2_ = true;
        }
        if constexpr (inline_values) {
            value_off_ = round_up(sizeof(word_atomic), alignof(T));
            stride_ = round_up(value_off_ + sizeof(T), std::max(alignof(word_atomic), alignof(T)));
            buffer_bytes_ = stride_ * cap_;
        } else {
            value_off_ = round_up(sizeof(word_atomic) * cap_, 64);
            stride_ = sizeof(T);
            buffer_bytes_ = value_off_ + sizeof(T) * cap_;
        }
        if constexpr (snapshot_reads) {
            // The chunked copies must stay aligned and inside the slot (see snap_chunk).
            if (value_off_ % snap_chunk != 0 || stride_ % snap_chunk != 0 ||
                (inline_values && value_off_ + snap_bytes > stride_)) {
                throw std::logic_error("lariv: snapshot layout is not chunk-aligned");
            }
        }
        for (auto& s : segments_) {
            s.store(nullptr, std::memory_order_relaxed);  // relaxed: not yet shared
        }
        link_buffer(0);
        nbuf_.store(1, std::memory_order_relaxed);  // relaxed: the constructor is not concurrent
        seg0_ = segments_[0].load(std::memory_order_relaxed);
    }

    Lariv(const Lariv&) = delete;
    Lariv& operator=(const Lariv&) = delete;

    /// Destroys every live element and frees every buffer. Requires quiescence.
    ~Lariv() {
        const std::uint64_t count = nbuf_.load(std::memory_order_acquire) & ~growing_bit;
        for (std::uint64_t b = 0; b < count; ++b) {
            std::byte* buf = buffer_ptr(b);
            for (std::size_t off = 0; off < cap_; ++off) {
                word_atomic& w = word_at(buf, off);
                const word_t cur = w.load(std::memory_order_acquire);
                const auto st = detail::slot_word::state(cur);
                if (st == detail::slot_state::live || st == detail::slot_state::dead) {
                    std::destroy_at(value_at(buf, off));
                }
                std::destroy_at(&w);
            }
            block_traits::deallocate(blocks_, reinterpret_cast<block*>(buf), blocks_per_buffer());
        }
        for (std::size_t k = 0; k < max_segments; ++k) {
            entry_atomic* seg = segments_[k].load(std::memory_order_acquire);
            if (seg != nullptr) {
                const std::size_t n = std::size_t{64} << k;
                for (std::size_t i = 0; i < n; ++i) {
                    std::destroy_at(&seg[i]);
                }
                entry_traits::deallocate(entries_, seg, n);
            }
        }
    }

    // --------------------------------------------------------------------------------- insert

    /// Constructs an element in a free slot. Returns its index, or std::nullopt when full and
    /// max_buffers forbids growth. Thread-safe. Lock-free; allocates only to link a new buffer.
    template <class... Args>
    [[nodiscard]] std::optional<Index> try_emplace(Args&&... args) {
        lane& ln = my_lane();
        // relaxed: a hint only (I10); the slot CAS decides ownership.
        const std::uint64_t h = ln.hint.load(std::memory_order_relaxed);
        std::uint64_t pos = h >> 32;
        std::uint64_t end = h & 0xFFFF'FFFFULL;
        std::uint64_t scanned = 0;
        for (;;) {
            std::byte* buf = nullptr;
            std::uint64_t buf_no = ~std::uint64_t{0};
            for (; pos < end; ++pos, ++scanned) {
                const auto [b, off] = split(pos);
                if (b != buf_no) {
                    buf_no = b;
                    buf = buffer_ptr(b);
                    if (buf == nullptr) {  // a hint from another thread, not yet visible here
                        break;
                    }
                }
                word_atomic& w = word_at(buf, off);
                const std::uint32_t g = protocol::try_claim(w);
                if (g == 0) {
                    continue;
                }
                // relaxed: hint only (I10).
                ln.hint.store(((pos + 1) << 32) | end, std::memory_order_relaxed);
                T* v = value_at(buf, off);
                try {
                    if constexpr (snapshot_reads) {
                        const T tmp(std::forward<Args>(args)...);
                        protocol::before_value_store();  // [P9c]
                        store_snapshot(v, tmp);
                    } else {
                        std::construct_at(v, std::forward<Args>(args)...);
                    }
                } catch (...) {
                    protocol::abandon(w, g);
                    throw;
                }
                protocol::publish(w, g);
                bump(ln, ln.pushed);
                return Index::make(node_id(), tag(), g, static_cast<std::uint32_t>(pos));
            }
            if (!next_batch(pos, end, scanned)) {
                return std::nullopt;
            }
        }
    }

    /// As try_emplace, but throws lariv::capacity_error when full.
    template <class... Args>
    Index emplace(Args&&... args) {
        if (auto i = try_emplace(std::forward<Args>(args)...)) {
            return *i;
        }
        throw capacity_error("lariv: full (max_buffers reached)");
    }

    [[nodiscard]] std::optional<Index> try_push(const T& v) { return try_emplace(v); }
    [[nodiscard]] std::optional<Index> try_push(T&& v) { return try_emplace(std::move(v)); }
    Index push(const T& v) { return emplace(v); }
    Index push(T&& v) { return emplace(std::move(v)); }

    // --------------------------------------------------------------------------------- lookup

    /// Shared guard on the element at `i`, or an empty guard if there is none. Thread-safe.
    /// Lock-free unless a WriteGuard is held on that element, which it waits for.
    [[nodiscard]] ReadGuard get(Index i) const noexcept {
        auto [w, v] = resolve(i);
        if (w != nullptr && pin<waiter::get>(*w, i.generation())) {
            return ReadGuard(w, v, i.generation());
        }
        return {};
    }

    /// Exclusive guard on the element at `i`, or an empty guard if there is none. Thread-safe.
    /// Waits while other guards are held on that element.
    [[nodiscard]] WriteGuard get_mut(Index i) noexcept
        requires(!snapshot_reads)  // a live value never changes: snapshot reads rely on it
    {
        auto [w, v] = resolve(i);
        if (w != nullptr && pin<waiter::get_mut>(*w, i.generation())) {
            return WriteGuard(w, v, i.generation());
        }
        return {};
    }

    /// A copy of the element at `i`, or std::nullopt if there is none: only with
    /// Traits::snapshot_reads. Thread-safe; wait-free; writes nothing (see the contract and [P9]).
    [[nodiscard]] std::optional<T> load(Index i) const noexcept
        requires(snapshot_reads)
    {
        std::optional<T> out;
        std::array<unsigned char, snap_bytes> bytes;
        if (copy_snapshot(i, bytes)) {
            out.emplace(from_bytes(bytes));
        }
        return out;
    }

    /// As load(i), into `out` (untouched on a miss): true if `i` names a live element. The form
    /// for hot loops: g++ 12 copies a returned std::optional<T> through the stack after a byte
    /// store, a store-forwarding stall that makes the optional form ~1.5x slower for 8 B values.
    [[nodiscard]] bool load(Index i, T& out) const noexcept
        requires(snapshot_reads)
    {
        std::array<unsigned char, snap_bytes> bytes;
        if (!copy_snapshot(i, bytes)) {
            return false;
        }
        std::memcpy(static_cast<void*>(&out), bytes.data(), sizeof(T));  // T is trivially copyable
        return true;
    }

    /// True if `i` currently names a live element (a snapshot). Thread-safe. Lock-free.
    [[nodiscard]] bool contains(Index i) const noexcept {
        auto [w, v] = resolve(i);
        if (w == nullptr) {
            return false;
        }
        // relaxed: a snapshot answer; nothing of the value is read.
        const word_t cur = w->load(std::memory_order_relaxed);
        return detail::slot_word::gen(cur) == i.generation() &&
               detail::slot_word::state(cur) == detail::slot_state::live;
    }

    /// What `i` names now: live, ended (this container issued it and the element is gone), or
    /// never issued. A snapshot; thread-safe; lock-free (one relaxed load). Generations count up
    /// from 1 per slot (free -> claimed -> live -> dead -> free with the next generation), so an
    /// index whose generation is behind its slot's was issued, and one ahead of it (or equal on a
    /// slot that is free or still being claimed, whose next push will issue it) never was. After
    /// a slot wraps its 2^G-1 generations a very old index may read as never issued.
    [[nodiscard]] IndexStatus status(Index i) const noexcept {
        auto [w, v] = resolve(i);
        if (w == nullptr) {
            return IndexStatus::never_issued;
        }
        // relaxed: a snapshot answer; nothing of the value is read.
        const word_t cur = w->load(std::memory_order_relaxed);
        const std::uint32_t g = detail::slot_word::gen(cur);
        if (g == i.generation()) {
            switch (detail::slot_word::state(cur)) {
                case detail::slot_state::live:
                    return IndexStatus::live;
                case detail::slot_state::dead:
                    return IndexStatus::ended;
                default:
                    return IndexStatus::never_issued;
            }
        }
        return i.generation() < g ? IndexStatus::ended : IndexStatus::never_issued;
    }

    // --------------------------------------------------------------------------------- remove

    /// Removes the element at `i`. True for exactly one of several concurrent removers/takers.
    /// Thread-safe. Lock-free; never waits: with guards held, the last guard destroys it.
    bool remove(Index i) noexcept {
        auto [w, v] = resolve(i);
        if (w == nullptr) {
            return false;
        }
        const detail::kill_result r = protocol::try_kill(*w, i.generation(), false);
        if (!r.won) {
            return false;
        }
        lane& ln = my_lane();
        bump(ln, ln.removed);
        if (r.destroy_now) {
            destroy_slot(*w, v);
        }
        return true;
    }

    /// Removes the element at `i` and returns it. Exactly one of several concurrent
    /// removers/takers wins. Thread-safe; waits only for guards held before the take.
    /// Strong guarantee: if T's move constructor throws, the element is put back (reachable again
    /// at the same index, as the move constructor left it) and the exception propagates.
    [[nodiscard]] std::optional<T> take(Index i) {
        auto [w, v] = resolve(i);
        if (w == nullptr) {
            return std::nullopt;
        }
        const std::uint32_t g = i.generation();
        const detail::kill_result r = protocol::try_kill(*w, g, true);
        if (!r.won) {
            return std::nullopt;
        }
#ifndef NDEBUG
        check_self_wait<waiter::take>(*w, g);
#endif
        protocol::wait_sole_pin(*w);
        // Runs after the return value was move-constructed (locals are destroyed after the return
        // object is initialised): counts the removal and drops the taker's pin, which destroys
        // the moved-from value (I4). Disarmed if the move throws.
        take_commit commit{this, w, v};
        try {
            // A prvalue: moved straight into the caller's object (no second move that could throw).
            return std::optional<T>(std::in_place, std::move(*v));
        } catch (...) {
            commit.word = nullptr;
            // DEAD(g, 1) -> LIVE(g, 0): the element is back at the same index (I5). Others saw it
            // absent meanwhile (contract: take). Not counted as removed.
            protocol::revive(*w, g);
            throw;
        }
    }

    // ------------------------------------------------------------------------------ iteration

    /// Calls f(Index, const T&) for live elements in slot order from `first_slot`, each under a
    /// ReadGuard. If f returns bool, false stops the walk. Weakly consistent (see the contract).
    /// f must not call take() or get_mut() on the element it is given (its own guard would block
    /// them: a self-deadlock, reported by an assert in debug builds).
    template <class F>
    void for_each(F&& f, std::uint32_t first_slot = 0) const {
        const std::uint64_t count = nbuf_.load(std::memory_order_acquire) & ~growing_bit;
        const std::uint64_t total = count * cap_;
        std::byte* buf = nullptr;
        std::uint64_t buf_no = ~std::uint64_t{0};
        for (std::uint64_t s = first_slot; s < total; ++s) {
            const auto [b, off] = split(s);
            if (b != buf_no) {
                buf_no = b;
                buf = buffer_ptr(b);
            }
            word_atomic& w = word_at(buf, off);
            // relaxed: picks the generation to try; the pin's CAS re-validates it.
            const word_t cur = w.load(std::memory_order_relaxed);
            if (detail::slot_word::state(cur) != detail::slot_state::live) {
                continue;
            }
            const std::uint32_t g = detail::slot_word::gen(cur);
            if (!pin<waiter::for_each>(w, g)) {
                continue;
            }
            ReadGuard guard(&w, value_at(buf, off), g);
#ifndef NDEBUG
            const visit_mark mark(&w, g);  // debug: get_mut/take of this element would deadlock
#endif
            const Index idx = Index::make(node_id(), tag(), g, static_cast<std::uint32_t>(s));
            if constexpr (std::is_invocable_r_v<bool, F&, const Index&, const T&>) {
                if (!f(idx, *guard)) {
                    return;
                }
            } else {
                f(idx, *guard);
            }
        }
    }

    // ------------------------------------------------------------------------------- figures

    /// Live elements. Approximate while other threads push or remove; exact when quiescent.
    std::size_t size() const noexcept {
        std::uint64_t pushed = 0;
        std::uint64_t removed = 0;
        for (const lane& l : lanes_) {
            // relaxed: statistics; see the contract's non-guarantees.
            pushed += l.pushed.load(std::memory_order_relaxed);
            removed += l.removed.load(std::memory_order_relaxed);
        }
        return pushed > removed ? static_cast<std::size_t>(pushed - removed) : 0;
    }
    bool empty() const noexcept { return size() == 0; }
    /// Slots in all linked buffers.
    std::size_t capacity() const noexcept { return node_count() * cap_; }
    /// Slots per buffer.
    std::size_t node_capacity() const noexcept { return cap_; }
    /// Linked buffers.
    std::size_t node_count() const noexcept {
        // acquire: pairs with [G3]; callers may use the count to reason about buffers.
        return static_cast<std::size_t>(nbuf_.load(std::memory_order_acquire) & ~growing_bit);
    }
    /// The most buffers this container may link.
    std::size_t max_node_count() const noexcept { return static_cast<std::size_t>(max_buffers_); }
    std::uint32_t node_id() const noexcept { return static_cast<std::uint32_t>(hi_ >> 32); }
    std::uint32_t tag() const noexcept { return static_cast<std::uint32_t>(hi_); }
    /// Bytes of buffer memory per buffer (words + element storage).
    std::size_t buffer_bytes() const noexcept { return blocks_per_buffer() * sizeof(block); }

private:
    /// Per-thread state, one cache line each so threads do not share lines.
    struct alignas(64) lane {
        atomic_t<std::uint64_t> hint{0};  ///< [pos:32][end:32] of this lane's claim batch (I10)
        atomic_t<std::uint64_t> pushed{0};
        atomic_t<std::uint64_t> removed{0};
    };

    static constexpr std::size_t auto_capacity() noexcept {
        constexpr std::size_t slot_bytes = sizeof(T) + sizeof(word_atomic);
        constexpr std::size_t fit = (std::size_t{512} << 10) / slot_bytes;
        return std::clamp<std::size_t>(std::bit_floor(std::max<std::size_t>(fit, 1)), 16, 1024);
    }
    /// Snapshot reads: copies the bytes of the element at `i` with relaxed atomic loads between
    /// [P9a] and [P9b]. False if `i` names no live element, or if its slot was reused meanwhile.
    bool copy_snapshot(Index i, std::array<unsigned char, snap_bytes>& bytes) const noexcept {
        auto [w, v] = resolve(i);
        const std::uint32_t g = i.generation();
        if (w == nullptr || !protocol::snapshot_open(*w, g)) {
            return false;
        }
        auto* src = reinterpret_cast<snap_chunk_t*>(v);
        for (std::size_t k = 0; k < snap_bytes / snap_chunk; ++k) {
            // relaxed: validated by the generation check below ([P9b]).
            const snap_chunk_t c = std::atomic_ref<snap_chunk_t>(src[k]).load(std::memory_order_relaxed);
            std::memcpy(bytes.data() + k * snap_chunk, &c, snap_chunk);
        }
        return protocol::snapshot_validate(*w, g);
    }
    static T from_bytes(const std::array<unsigned char, snap_bytes>& bytes) noexcept {
        std::array<unsigned char, sizeof(T)> exact;
        std::memcpy(exact.data(), bytes.data(), sizeof(T));
        return std::bit_cast<T>(exact);
    }

    /// Snapshot reads: writes a new value's bytes as relaxed atomic stores ([P9c] came first),
    /// so a snapshot reader of an older generation copying them races with nothing.
    static void store_snapshot(T* dst, const T& src) noexcept {
        const auto* from = reinterpret_cast<const unsigned char*>(&src);
        auto* d = reinterpret_cast<snap_chunk_t*>(dst);
        constexpr std::size_t whole = sizeof(T) / snap_chunk;
        for (std::size_t k = 0; k < snap_bytes / snap_chunk; ++k) {
            snap_chunk_t c{};  // the last chunk of an inline value may run into the slot's padding
            std::memcpy(&c, from + k * snap_chunk, k < whole ? snap_chunk : sizeof(T) % snap_chunk);
            // relaxed: published by [P2]; ordered after the claim by [P9c].
            std::atomic_ref<snap_chunk_t>(d[k]).store(c, std::memory_order_relaxed);
        }
    }

    static constexpr std::size_t round_up(std::size_t n, std::size_t a) noexcept {
        return (n + a - 1) / a * a;
    }
    std::size_t blocks_per_buffer() const noexcept { return (buffer_bytes_ + 63) / 64; }

    /// Threads numbered below lanes - 1 own their lane; all others share the last one.
    lane& my_lane() const noexcept {
        const std::size_t n = detail::this_thread_number();
        return lanes_[n < Traits::lanes - 1 ? n : Traits::lanes - 1];
    }
    bool owns(const lane& l) const noexcept { return &l != &lanes_[Traits::lanes - 1]; }
    /// Adds 1 to a lane counter: a plain load and store on an owned lane (no locked instruction
    /// on the push/remove paths), an atomic add on the shared lane.
    void bump(const lane& l, atomic_t<std::uint64_t>& counter) const noexcept {
        // relaxed: statistics for size() and the growth rule; they publish nothing. On an owned
        // lane this thread is the only writer (I11), so load + store loses no increment.
        if (owns(l)) {
            counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        } else {
            counter.fetch_add(1, std::memory_order_relaxed);
        }
    }

    struct split_t {
        std::uint64_t buffer;
        std::size_t offset;
    };
    split_t split(std::uint64_t slot) const noexcept {
        if (cap_pow2_) {
            return {slot >> cap_shift_, static_cast<std::size_t>(slot & (cap_ - 1))};
        }
        return {slot / cap_, static_cast<std::size_t>(slot % cap_)};
    }

    word_atomic& word_at(std::byte* buf, std::size_t off) const noexcept {
        const std::size_t at = inline_values ? off * stride_ : off * sizeof(word_atomic);
        return *std::launder(reinterpret_cast<word_atomic*>(buf + at));
    }
    T* value_at(std::byte* buf, std::size_t off) const noexcept {
        const std::size_t at = inline_values ? off * stride_ + value_off_ : value_off_ + off * stride_;
        return reinterpret_cast<T*>(buf + at);
    }

    /// Buffer number b, or nullptr if it is not (visibly) linked. O(1): two loads.
    std::byte* buffer_ptr(std::uint64_t b) const noexcept {
        if (b < (std::uint64_t{1} << seg0_bits)) {
            // Segment 0 is allocated by the constructor and never changes: one load fewer for
            // the first 64 buffers. [G2] acquire: pairs with [G1].
            return seg0_[b].load(std::memory_order_acquire);
        }
        const std::uint64_t q = b + (std::uint64_t{1} << seg0_bits);
        const std::size_t k = static_cast<std::size_t>(std::bit_width(q)) - 1 - seg0_bits;
        if (k >= max_segments) {
            return nullptr;
        }
        // [G2] acquire: pairs with the release store of the segment in link_buffer.
        entry_atomic* seg = segments_[k].load(std::memory_order_acquire);
        if (seg == nullptr) {
            return nullptr;
        }
        // [G2] acquire: pairs with [G1]; the buffer's initialised words are visible.
        return seg[q - (std::uint64_t{1} << (seg0_bits + k))].load(std::memory_order_acquire);
    }

    struct resolved {
        word_atomic* word;
        T* value;
    };
    /// Maps an index of this container to its slot; {nullptr, nullptr} for a foreign, null or
    /// out-of-range index. Generation and state are checked by the caller's CAS (I2).
    resolved resolve(Index i) const noexcept {
        if (i.hi != hi_ || i.generation() == 0) {
            return {nullptr, nullptr};
        }
        const auto [b, off] = split(i.slot());
        std::byte* buf = buffer_ptr(b);
        if (buf == nullptr) {
            return {nullptr, nullptr};
        }
        return {&word_at(buf, off), value_at(buf, off)};
    }

    /// The operation that waits in pin() (or take's wait): a compile-time tag, so that the
    /// debug self-deadlock check costs nothing in release builds.
    enum class waiter { get, get_mut, for_each, take };

    template <waiter Op>
    static bool pin(word_atomic& w, std::uint32_t g) noexcept {
        detail::backoff bo;
        for (;;) {
            switch (protocol::try_pin(w, g, Op == waiter::get_mut)) {
                case detail::pin_result::ok:
                    return true;
                case detail::pin_result::absent:
                    return false;
                case detail::pin_result::busy:
#ifndef NDEBUG
                    check_self_wait<Op>(w, g);
#endif
                    bo.pause();
                    break;
            }
        }
    }

#ifndef NDEBUG
    /// Debug builds: asserts that this thread is not about to wait for a pin it holds itself on
    /// the element (w, g) (see "Self-deadlocks" in the contract). Called only where the wait has
    /// begun (pin found the slot busy; take won the kill), so a guard of another thread is never
    /// reported. Reads only this thread's record.
    template <waiter Op>
    static void check_self_wait(const word_atomic& w, std::uint32_t g) noexcept {
        detail::held_slots& h = detail::tls_held_slots;
        [[maybe_unused]] const bool visiting = h.holds(&w, g, detail::held_slots::visit) != 0;
        [[maybe_unused]] const bool writing = h.holds(&w, g, detail::held_slots::writer) != 0;
        [[maybe_unused]] const bool reading = h.holds(&w, g, detail::held_slots::reader) != 0;
        if constexpr (Op == waiter::get) {
            assert(!writing && "lariv: self-deadlock: get() of an element this thread holds a WriteGuard on");
        } else if constexpr (Op == waiter::for_each) {
            assert(!writing && "lariv: self-deadlock: for_each() reached an element this thread holds a WriteGuard on");
        } else if constexpr (Op == waiter::get_mut) {
            assert(!visiting && "lariv: self-deadlock: get_mut() of the element this thread is visiting in for_each");
            assert(!writing && "lariv: self-deadlock: get_mut() of an element this thread already holds a WriteGuard on");
            assert(!reading && "lariv: self-deadlock: get_mut() of an element this thread holds a ReadGuard on");
        } else {
            assert(!visiting && "lariv: self-deadlock: take() of the element this thread is visiting in for_each");
            assert(!(writing || reading) && "lariv: self-deadlock: take() of an element this thread holds a guard on");
        }
    }

    /// Debug builds: marks (w, g) as visited by this thread's for_each while f runs.
    struct visit_mark {
        const void* word;
        visit_mark(const void* w, std::uint32_t g) noexcept : word(w) {
            detail::tls_held_slots.add(w, g, detail::held_slots::visit);
        }
        visit_mark(const visit_mark&) = delete;
        visit_mark& operator=(const visit_mark&) = delete;
        ~visit_mark() { detail::tls_held_slots.drop(word, detail::held_slots::visit); }
    };
#endif

    /// take()'s commit step once the value was moved out: see take().
    struct take_commit {
        Lariv* self;
        word_atomic* word;
        T* value;
        take_commit(Lariv* s, word_atomic* w, T* v) noexcept
            : self(s)
            , word(w)
            , value(v) {}
        take_commit(const take_commit&) = delete;
        take_commit& operator=(const take_commit&) = delete;
        ~take_commit() {
            if (word != nullptr) {
                lane& ln = self->my_lane();
                self->bump(ln, ln.removed);
                if (protocol::unpin(*word, false)) {  // always: the taker's pin was the last
                    destroy_slot(*word, value);
                }
            }
        }
    };

    static void destroy_slot(word_atomic& w, T* v) noexcept {
        std::destroy_at(v);
        protocol::release_slot(w);
    }

    std::uint64_t total_removed() const noexcept {
        std::uint64_t n = 0;
        for (const lane& l : lanes_) {
            n += l.removed.load(std::memory_order_relaxed);  // relaxed: growth heuristic input
        }
        return n;
    }

    /// Hands this thread the next claim batch [pos, end). At the end of a lap applies the growth
    /// policy. Returns false when the ring is full and max_buffers forbids growth.
    bool next_batch(std::uint64_t& pos_out, std::uint64_t& end_out, std::uint64_t scanned) {
        for (;;) {
            // acquire/acq_rel on the cursor: a cursor position past an old ring end is only seen
            // together with the buffer count that allowed it.
            std::uint64_t s = sweep_.load(std::memory_order_acquire);
            // [G4] acquire: pairs with [G3]; buffers below the count are usable (I7).
            const std::uint64_t count = nbuf_.load(std::memory_order_acquire) & ~growing_bit;
            const std::uint64_t ring = count * cap_;
            const std::uint64_t pos = s & 0xFFFF'FFFFULL;
            const std::uint64_t lap = s >> 32;
            if (pos < ring) {
                // A batch is at most an eighth of the ring, so on a small ring several threads
                // can hold batches at once instead of the first one holding the whole lap (which
                // made every other inserter see a lap end and grow the ring).
                const std::uint64_t batch = std::clamp<std::uint64_t>(ring / 8, 1, batch_);
                const std::uint64_t end = std::min<std::uint64_t>(pos + batch, ring);
                if (sweep_.compare_exchange_weak(s, (lap << 32) | end, std::memory_order_acq_rel,
                                                 std::memory_order_relaxed)) {
                    pos_out = pos;
                    end_out = end;
                    return true;
                }
                continue;
            }
            // End of a lap: apply the growth policy. The decision is acted on only by the thread
            // whose CAS moves the cursor on from this exact lap end, so a thread with a stale view
            // (another thread already wrapped and reset lap_mark_) cannot grow by mistake.
            const bool ring_full = scanned >= 2 * ring;
            const auto freed = total_removed() - lap_mark_.load(std::memory_order_relaxed);
            const auto wanted =
                static_cast<std::uint64_t>(min_freed_ratio_ * static_cast<double>(ring));
            const bool can_grow = count < max_buffers_;
            if (ring_full && !can_grow) {
                return false;
            }
            const bool grow_now = can_grow && (ring_full || freed < wanted);
            // Growing: the lap goes on into the new buffer (pos stays), and the freed count keeps
            // accumulating. Wrapping: a new lap starts at slot 0 and the count restarts. Either way
            // the "lap" field changes, which is what makes stale views' CASes fail.
            const std::uint64_t next = ((lap + 1) << 32) | (grow_now ? pos : 0);
            if (sweep_.compare_exchange_strong(s, next, std::memory_order_acq_rel,
                                               std::memory_order_relaxed)) {
                if (grow_now) {
                    grow(count);
                } else {
                    // relaxed: heuristic input, read only by the growth rule.
                    lap_mark_.store(total_removed(), std::memory_order_relaxed);
                }
            }
        }
    }

    /// Links buffer number `count` unless another thread did or is doing it (I9). Waits at most
    /// for that other thread's one allocation.
    void grow(std::uint64_t count) {
        std::uint64_t expected = count;
        // acquire: see the segments the previous grower published before its [G3] release.
        if (nbuf_.compare_exchange_strong(expected, count | growing_bit, std::memory_order_acquire,
                                          std::memory_order_relaxed)) {
            try {
                link_buffer(count);
            } catch (...) {
                nbuf_.store(count, std::memory_order_release);  // give up the growing bit
                throw;
            }
            // [G3] release: buffer `count` is in the directory ([G1]) before it is counted (I7).
            nbuf_.store(count + 1, std::memory_order_release);
            return;
        }
        detail::backoff bo;
        // acquire: pairs with [G3] of the thread that is growing.
        while (nbuf_.load(std::memory_order_acquire) == (count | growing_bit)) {
            bo.pause();
        }
    }

    /// Allocates buffer b, initialises every word FREE with generation 1 and publishes it in the
    /// directory. Called by the constructor and by the one grower of b (I9).
    void link_buffer(std::uint64_t b) {
        const std::uint64_t q = b + (std::uint64_t{1} << seg0_bits);
        const std::size_t k = static_cast<std::size_t>(std::bit_width(q)) - 1 - seg0_bits;
        // relaxed: only growers write segments, and they are serialised by the growing bit.
        entry_atomic* seg = segments_[k].load(std::memory_order_relaxed);
        if (seg == nullptr) {
            const std::size_t n = std::size_t{64} << k;
            seg = entry_traits::allocate(entries_, n);
            for (std::size_t i = 0; i < n; ++i) {
                std::construct_at(&seg[i], nullptr);
            }
            // release: pairs with [G2]; the nulled entries are visible with the segment.
            segments_[k].store(seg, std::memory_order_release);
        }
        block* mem = block_traits::allocate(blocks_, blocks_per_buffer());
        auto* buf = reinterpret_cast<std::byte*>(mem);
        for (std::size_t off = 0; off < cap_; ++off) {
            const std::size_t at = inline_values ? off * stride_ : off * sizeof(word_atomic);
            ::new (static_cast<void*>(buf + at))
                word_atomic(detail::slot_word::make(1, detail::slot_state::free));
        }
        // [G1] release: the initialised words are visible to whoever loads the entry ([G2]).
        seg[q - (std::uint64_t{1} << (seg0_bits + k))].store(buf, std::memory_order_release);
    }

    [[no_unique_address]] block_alloc blocks_;
    [[no_unique_address]] entry_alloc entries_;
    std::size_t cap_;
    std::uint64_t hi_;  // node id and tag stamped in every index
    std::size_t batch_;
    double min_freed_ratio_;
    std::uint64_t max_buffers_ = 0;
    unsigned cap_shift_ = 0;
    bool cap_pow2_ = false;
    std::size_t value_off_ = 0;
    std::size_t stride_ = 0;
    std::size_t buffer_bytes_ = 0;

    mutable atomic_t<entry_atomic*> segments_[max_segments];
    entry_atomic* seg0_ = nullptr;  // == segments_[0], immutable after construction
    alignas(64) atomic_t<std::uint64_t> nbuf_{0};       ///< [growing:1][count:63]
    alignas(64) atomic_t<std::uint64_t> sweep_{0};  ///< [version:32][pos:32] shared cursor
    alignas(64) atomic_t<std::uint64_t> lap_mark_{0};   ///< total_removed() at the lap's start
    mutable lane lanes_[Traits::lanes];
};

}  // namespace lariv
