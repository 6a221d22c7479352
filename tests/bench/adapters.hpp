// tests/bench/adapters.hpp — Lariv and its peers behind one small interface, for lariv_bench.
//
// Every adapter A<V> (V = Small or Big, see below) offers:
//   using key_type;                                  what the caller keeps to reach the element
//   static constexpr const char* name, * note;       column name; how the peer stores V
//   A(unsigned hw_threads, std::size_t max_live);  max_live: the most elements live in the run
//                                                    (only libcuckoo uses it, see its note)
//   key_type insert(std::uint64_t tag);              constructs V(tag) in the container
//   bool find(const key_type&, std::uint64_t& out);  true if present; out = read_tag(value)
//   bool erase(const key_type&);                     true if it removed the element
// Peers are keyed by the 64-bit tag itself (a per-thread counter combined with the thread id, as
// a registry keys sessions); Lariv by the lariv::Index its push returned. find() reads the value
// (first and last word of a 4 KiB value) so that a lookup really touches the element, and the
// driver checks that the tag read back is the one inserted (a broken adapter cannot be fast).
// Each adapter is used exactly as its documentation shows; the only deviations are stated in
// `note` and printed with the results.
#pragma once

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>
#include <vector>

#include <libcuckoo/cuckoohash_map.hh>
#include <oneapi/tbb/concurrent_hash_map.h>
#include <xenium/reclamation/generic_epoch_based.hpp>
#include <xenium/vyukov_hash_map.hpp>

#include "lariv/lariv.hpp"

namespace bench {

// ------------------------------------------------------------------------------------ values

/// The 8-byte element.
struct Small {
    std::uint64_t v;
    explicit Small(std::uint64_t tag) noexcept : v(tag ^ 0x5bd1e9955bd1e995ULL) {}
};
inline std::uint64_t read_tag(const Small& s) noexcept { return s.v ^ 0x5bd1e9955bd1e995ULL; }

/// The 4 KiB element (a session object). Its constructor writes the first and the last word and
/// leaves the payload uninitialised (a session fills it later), so every container pays the same
/// construction cost and the figures measure the container, not a 4 KiB memset.
struct Big {
    std::uint64_t head;
    std::byte payload[4096 - 16];
    std::uint64_t tail;
    explicit Big(std::uint64_t tag) noexcept : head(tag), tail(~tag) {}  // NOLINT: payload
};
static_assert(sizeof(Big) == 4096);
/// The tag, or a value that matches no tag issued by the driver if the element is torn.
inline std::uint64_t read_tag(const Big& b) noexcept {
    return b.tail == ~b.head ? b.head : ~std::uint64_t{0};
}

template <class V>
inline constexpr const char* value_name = sizeof(V) == 8 ? "8B" : "4KiB";

inline std::uint64_t mix64(std::uint64_t x) noexcept {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

// ------------------------------------------------------------------------------------- Lariv

template <class V>
class LarivAdapter {
public:
    using key_type = lariv::Index;
    static constexpr const char* name = "lariv";
    static constexpr const char* note = "lariv::Lariv<V>, default Options; key = lariv::Index";

    LarivAdapter(unsigned /*hw*/, std::size_t /*max_live*/) {}
    key_type insert(std::uint64_t tag) { return c_.emplace(tag); }
    bool find(const key_type& k, std::uint64_t& out) const {
        auto g = c_.get(k);
        if (!g) {
            return false;
        }
        out = read_tag(*g);
        return true;
    }
    bool erase(const key_type& k) { return c_.remove(k); }

private:
    lariv::Lariv<V> c_;
};

/// Lariv with snapshot reads: find() is load(), a copy validated by the slot word that writes
/// nothing, so readers of one element do not move its cache line. (For 4 KiB values it copies
/// the whole value: the price of a read that holds nothing.)
template <class V>
class LarivSnapAdapter {
public:
    using key_type = lariv::Index;
    static constexpr const char* name = "lariv-snap";
    static constexpr const char* note =
        "lariv::Lariv<V, lariv::SnapshotTraits>, default Options; find = load(k, out) (a validated "
        "copy, no write); key = lariv::Index";

    LarivSnapAdapter(unsigned /*hw*/, std::size_t /*max_live*/) {}
    key_type insert(std::uint64_t tag) { return c_.emplace(tag); }
    bool find(const key_type& k, std::uint64_t& out) const {
        V v(0);
        if (!c_.load(k, v)) {
            return false;
        }
        out = read_tag(v);
        return true;
    }
    bool erase(const key_type& k) { return c_.remove(k); }

private:
    lariv::Lariv<V, lariv::SnapshotTraits> c_;
};

// ------------------------------------------------------------ sharded map + shared_mutex (DashMap)

template <class V>
class ShardedRwAdapter {
public:
    using key_type = std::uint64_t;
    static constexpr const char* name = "sharded-rw";
    static constexpr const char* note =
        "std::unordered_map + std::shared_mutex per shard, 4 x hw threads shards (the DashMap design)";

    ShardedRwAdapter(unsigned hw, std::size_t /*max_live*/)
        : bits_(static_cast<unsigned>(std::bit_width(std::bit_ceil(4u * std::max(1u, hw))) - 1))
        , shards_(std::size_t{1} << bits_) {}
    key_type insert(std::uint64_t tag) {
        shard& s = pick(tag);
        std::unique_lock lk(s.m);
        s.map.try_emplace(tag, tag);
        return tag;
    }
    bool find(const key_type& k, std::uint64_t& out) const {
        const shard& s = pick(k);
        std::shared_lock lk(s.m);
        auto it = s.map.find(k);
        if (it == s.map.end()) {
            return false;
        }
        out = read_tag(it->second);
        return true;
    }
    bool erase(const key_type& k) {
        shard& s = pick(k);
        std::unique_lock lk(s.m);
        return s.map.erase(k) == 1;
    }

private:
    struct alignas(64) shard {
        mutable std::shared_mutex m;
        std::unordered_map<std::uint64_t, V> map;
    };
    shard& pick(std::uint64_t k) { return shards_[bits_ == 0 ? 0 : mix64(k) >> (64 - bits_)]; }
    const shard& pick(std::uint64_t k) const {
        return shards_[bits_ == 0 ? 0 : mix64(k) >> (64 - bits_)];
    }
    unsigned bits_;
    std::vector<shard> shards_;
};

// ------------------------------------------------------------------ tbb::concurrent_hash_map

template <class V>
class TbbAdapter {
public:
    using key_type = std::uint64_t;
    static constexpr const char* name = "tbb-chm";
    static constexpr const char* note =
        "tbb::concurrent_hash_map with std::allocator (so its bytes are counted; tbbmalloc not used)";

    TbbAdapter(unsigned /*hw*/, std::size_t /*max_live*/) {}
    key_type insert(std::uint64_t tag) {
        c_.emplace(tag, tag);
        return tag;
    }
    bool find(const key_type& k, std::uint64_t& out) const {
        typename map_t::const_accessor a;
        if (!c_.find(a, k)) {
            return false;
        }
        out = read_tag(a->second);
        return true;
    }
    bool erase(const key_type& k) { return c_.erase(k); }

private:
    using map_t = tbb::concurrent_hash_map<std::uint64_t, V, tbb::tbb_hash_compare<std::uint64_t>,
                                           std::allocator<std::pair<const std::uint64_t, V>>>;
    map_t c_;
};

// -------------------------------------------------------------------- libcuckoo::cuckoohash_map

template <class V>
class CuckooAdapter {
public:
    using key_type = std::uint64_t;
    static constexpr const char* name = "libcuckoo";
    static constexpr const char* note =
        "libcuckoo::cuckoohash_map, values inline in buckets, sized up front for the run's peak "
        "(Debian's 0.3.1 crashes when its table grows under 2 threads inserting 4 KiB values)";

    // Sized so that the table never grows during a run: libcuckoo 0.3.1 (Debian 12) segfaults in
    // cuckoo_insert while another thread grows the table (seen with 4 KiB values, 2 threads:
    // upstream issues #148/#156). 8 B: its default size, or more if the run needs it. 4 KiB: the
    // default (2^18 slots) would preallocate 1 GiB, so 2 x the peak live count instead.
    CuckooAdapter(unsigned /*hw*/, std::size_t max_live)
        : c_(sizeof(V) == 8 ? std::max(libcuckoo::DEFAULT_SIZE, 2 * max_live) : 2 * max_live) {}
    key_type insert(std::uint64_t tag) {
        c_.insert(tag, tag);
        return tag;
    }
    bool find(const key_type& k, std::uint64_t& out) const {
        return c_.find_fn(k, [&out](const V& v) { out = read_tag(v); });
    }
    bool erase(const key_type& k) { return c_.erase(k); }

private:
    libcuckoo::cuckoohash_map<std::uint64_t, V> c_;
};

// ------------------------------------------------------------------------- xenium vyukov_hash_map

using xenium_reclaimer = xenium::reclamation::generic_epoch_based<>;

/// The 4 KiB value as xenium needs it: vyukov_hash_map stores only 4/8-byte trivial values inline,
/// so a large value goes through managed_ptr: one heap node per element, reclaimed by the epoch
/// scheme after erase (safe against concurrent readers). That extra allocation is xenium's real
/// cost for large values. (managed_ptr is also the path that Debian's xenium 0.0.2 handles when
/// erasing an absent key; the non-trivial-value path crashes there. The driver only erases
/// present keys anyway.)
struct XeniumBig : xenium_reclaimer::enable_concurrent_ptr<XeniumBig> {
    Big v;
    explicit XeniumBig(std::uint64_t tag) noexcept : v(tag) {}
};

template <class V>
class XeniumAdapter;

template <>
class XeniumAdapter<Small> {
public:
    using key_type = std::uint64_t;
    static constexpr const char* name = "xenium";
    static constexpr const char* note =
        "xenium::vyukov_hash_map<uint64_t, uint64_t>, generic_epoch_based reclaimer, value inline";

    XeniumAdapter(unsigned /*hw*/, std::size_t /*max_live*/) {}
    key_type insert(std::uint64_t tag) {
        c_.emplace(tag, Small(tag).v);
        return tag;
    }
    bool find(const key_type& k, std::uint64_t& out) const {
        map_t::accessor a;
        if (!c_.try_get_value(k, a)) {
            return false;
        }
        out = *a ^ 0x5bd1e9955bd1e995ULL;  // read_tag of the Small stored as its word
        return true;
    }
    bool erase(const key_type& k) { return c_.erase(k); }

private:
    using map_t = xenium::vyukov_hash_map<std::uint64_t, std::uint64_t,
                                          xenium::policy::reclaimer<xenium_reclaimer>>;
    mutable map_t c_;
};

template <>
class XeniumAdapter<Big> {
public:
    using key_type = std::uint64_t;
    static constexpr const char* name = "xenium";
    static constexpr const char* note =
        "xenium::vyukov_hash_map<uint64_t, managed_ptr<4 KiB>>: one extra heap node per element";

    XeniumAdapter(unsigned /*hw*/, std::size_t /*max_live*/) {}
    key_type insert(std::uint64_t tag) {
        c_.emplace(tag, new XeniumBig(tag));
        return tag;
    }
    bool find(const key_type& k, std::uint64_t& out) const {
        map_t::accessor a;
        if (!c_.try_get_value(k, a)) {
            return false;
        }
        out = read_tag(a->v);
        return true;
    }
    bool erase(const key_type& k) { return c_.erase(k); }

private:
    using map_t = xenium::vyukov_hash_map<std::uint64_t, xenium::managed_ptr<XeniumBig, xenium_reclaimer>,
                                          xenium::policy::reclaimer<xenium_reclaimer>>;
    mutable map_t c_;
};

// -------------------------------------------------------------- one mutex + std::unordered_map

template <class V>
class MutexMapAdapter {
public:
    using key_type = std::uint64_t;
    static constexpr const char* name = "mutex-map";
    static constexpr const char* note =
        "one std::mutex + std::unordered_map (the floor; Beast chat-multi's shared_state)";

    MutexMapAdapter(unsigned /*hw*/, std::size_t /*max_live*/) {}
    key_type insert(std::uint64_t tag) {
        std::lock_guard lk(m_);
        map_.try_emplace(tag, tag);
        return tag;
    }
    bool find(const key_type& k, std::uint64_t& out) const {
        std::lock_guard lk(m_);
        auto it = map_.find(k);
        if (it == map_.end()) {
            return false;
        }
        out = read_tag(it->second);
        return true;
    }
    bool erase(const key_type& k) {
        std::lock_guard lk(m_);
        return map_.erase(k) == 1;
    }

private:
    mutable std::mutex m_;
    std::unordered_map<std::uint64_t, V> map_;
};

}  // namespace bench
