// lariv/server/detail/etcd.hpp — a small client of etcd 3.4's v3 JSON gateway (HTTP/1.1 + JSON
// under /v3/), for cluster membership: leases, claim-if-absent, prefix reads and prefix watches.
//
// Why Asio and no HTTP or etcd library: the client runs on the host's executor (the registry's
// io_context, through a strand the caller passes) with no thread of its own, and adds no
// dependency (Asio and nlohmann_json are already public dependencies of lariv::registry). The
// gateway's needs are small: POST one JSON body per connection ("Connection: close") and read a
// Content-Length, chunked or read-until-EOF answer; a watch is one chunked stream of JSON objects,
// one per line. gRPC would bring protobuf, gRPC's own threads and a much larger build.
//
// Design:
//  - One op object per call (shared_ptr, kept alive by its pending async operations), with its own
//    strand on the client's executor: resolve (names are resolved at each call), connect, write,
//    read, parse; a timer bounds the whole call. Each handler is dispatched through the client's
//    executor exactly once (a watch: on_events any number of times, on_end exactly once, last).
//  - An op holds a shared_ptr to its client, so dropping the client's last shared_ptr while calls
//    are pending is safe: the client lives until its last op has completed. cancel() (from any
//    thread) posts an abort to every pending op: its handler gets asio::error::operation_aborted.
//  - etcd JSON: keys and values are base64, 64-bit integers are JSON strings (sent as strings
//    too; numbers are accepted on input), and fields holding their default are omitted (proto3):
//    a missing field is its default, never an error.
//  - Bounded memory: a response body (or one watch line) over 4 MiB fails with bad_response; a
//    watch reads its next bytes only after the caller's on_events for the previous ones has run.
#pragma once

#include <asio/any_io_executor.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

namespace lariv::server::detail {

/// Errors of the etcd client besides Asio's own (connection refused, timed_out, operation_aborted...).
enum class etcd_errc {
    http_status = 1,  ///< etcd answered a status other than 200 (or a 200 carrying an "error"); see last_error()
    bad_response,     ///< not HTTP, not JSON, a field of the wrong type or bad base64, or over 4 MiB
    watch_canceled,   ///< etcd canceled a watch ("canceled":true) or sent an error on its stream
    compacted,        ///< a watch's start revision is compacted ("compact_revision"): re-read, re-watch
};
const std::error_category& etcd_category() noexcept;
std::error_code make_error_code(etcd_errc e) noexcept;

}  // namespace lariv::server::detail

template <>
struct std::is_error_code_enum<lariv::server::detail::etcd_errc> : std::true_type {};

namespace lariv::server::detail {

struct etcd_kv {
    std::string key;
    std::string value;
    std::int64_t create_revision = 0;
    std::int64_t mod_revision = 0;
    std::int64_t lease = 0;
};

struct etcd_event {
    enum class kind : std::uint8_t { put, del } type = kind::put;
    etcd_kv kv;  ///< for del: only key and mod_revision are set
};

/// Standard base64 with padding (what etcd's gateway speaks).
std::string base64_encode(std::string_view in);
/// nullopt on bad input (a character outside the alphabet, bad padding, length not a multiple of 4).
std::optional<std::string> base64_decode(std::string_view in);
/// etcd's range_end for all keys starting with `prefix`: the prefix with its last byte below 0xff
/// incremented and what follows dropped ("a/" -> "a0"); "\0" (no upper bound) when every byte is
/// 0xff or the prefix is empty.
std::string prefix_range_end(std::string_view prefix);

class etcd_op;

/// A running watch. cancel() ends it: on_end gets operation_aborted (unless it had already ended).
/// Dropping the handle does not cancel the watch; etcd_client::cancel() does too.
class etcd_watch {
public:
    void cancel();  ///< thread-safe

private:
    friend class etcd_client;
    explicit etcd_watch(std::weak_ptr<etcd_op> op) : op_(std::move(op)) {}
    std::weak_ptr<etcd_op> op_;
};

class etcd_client : public std::enable_shared_from_this<etcd_client> {
    struct private_tag {};

public:
    /// The bound of each call made by the typed helpers below (grant ... delete_key).
    static constexpr std::chrono::milliseconds default_request_timeout{5000};
    /// A watch's bound until etcd has answered its request headers (the stream itself is unbounded).
    static constexpr std::chrono::milliseconds watch_open_timeout{10000};
    /// The largest response body (and, for a watch, the longest line) accepted.
    static constexpr std::size_t max_body = std::size_t{4} << 20;

    /// endpoint "http://host:port" (http only; host an IPv4 literal, a bracketed IPv6 literal or a
    /// name resolved at each call; an optional trailing "/"). Throws std::invalid_argument on a bad
    /// endpoint. Every handler is dispatched through `ex` (pass a strand) and called exactly once.
    static std::shared_ptr<etcd_client> create(asio::any_io_executor ex, std::string_view endpoint);
    etcd_client(private_tag, asio::any_io_executor ex, std::string_view endpoint);
    etcd_client(const etcd_client&) = delete;
    etcd_client& operator=(const etcd_client&) = delete;
    ~etcd_client();

    using json_handler = std::function<void(std::error_code, nlohmann::json)>;

    /// POST `path` with a JSON body on a connection of its own ("Connection: close"), bounded by
    /// `timeout` (resolve + connect + write + read): asio::error::timed_out when it passes. A
    /// non-200 answer gives etcd_errc::http_status (etcd's "error"/"message" in last_error()) and
    /// the parsed error body (or null); bad HTTP, bad JSON or a body over max_body: bad_response.
    void call(std::string path, const nlohmann::json& body, std::chrono::milliseconds timeout, json_handler h);

    /// A lease of `ttl`; its ID (never 0).
    void grant(std::chrono::seconds ttl, std::function<void(std::error_code, std::int64_t lease_id)> h);
    /// One txn: if `key` does not exist, put it (attached to `lease`, none if 0): created = true.
    /// Otherwise created = false and `holder` is the existing kv.
    void put_if_absent(std::string key, std::string value, std::int64_t lease,
                       std::function<void(std::error_code, bool created, std::optional<etcd_kv> holder)> h);
    /// One keepalive round; ttl = the lease's remaining TTL in seconds, 0 when it no longer exists.
    void keepalive(std::int64_t lease, std::function<void(std::error_code, std::int64_t ttl)> h);
    /// Revoke the lease (its keys are deleted at once). An unknown lease is an http_status error.
    void revoke(std::int64_t lease, std::function<void(std::error_code)> h);
    /// Every key starting with `prefix`, and the store's revision they were read at (start a
    /// watch from revision + 1 to miss nothing).
    void range_prefix(std::string prefix,
                      std::function<void(std::error_code, std::vector<etcd_kv> kvs, std::int64_t revision)> h);
    /// Delete one key (for tests and tools).
    void delete_key(std::string key, std::function<void(std::error_code)> h);

    /// A long-lived watch over `prefix` from `start_revision` (0: from now): on_events for each
    /// result carrying events (not the "created" one) with its header revision; on_end once, last,
    /// when the stream ends (asio::error::eof), fails, is canceled by etcd (watch_canceled), finds
    /// its revision compacted (compacted), or is cancelled here (operation_aborted).
    [[nodiscard]] std::shared_ptr<etcd_watch> watch_prefix(
        std::string prefix,
        std::int64_t start_revision,
        std::function<void(const std::vector<etcd_event>&, std::int64_t revision)> on_events,
        std::function<void(std::error_code)> on_end);

    /// Aborts every pending call and watch of this client (their handlers get
    /// asio::error::operation_aborted). Thread-safe; calls made afterwards are not affected.
    void cancel();
    /// The last failure's text (thread-safe), "" if none.
    std::string last_error() const;
    const std::string& endpoint() const { return endpoint_; }

    /// The bound of the typed helpers' calls (default_request_timeout). Set before use.
    void set_request_timeout(std::chrono::milliseconds t) { request_timeout_ = t; }

private:
    friend class etcd_op;
    void add_op(const std::shared_ptr<etcd_op>& op);
    void set_last_error(std::string text);
    std::error_code decoded(const std::optional<std::string>& failure);  // bad_response + last_error

    asio::any_io_executor ex_;
    std::string endpoint_;
    std::string host_;       // without brackets
    std::string port_;
    std::string host_header_;
    bool literal_ = false;  // host_ is an IP address: no resolver
    std::chrono::milliseconds request_timeout_ = default_request_timeout;

    mutable std::mutex mu_;
    std::vector<std::weak_ptr<etcd_op>> ops_;  // guarded by mu_
    std::string last_error_;                   // guarded by mu_
};

}  // namespace lariv::server::detail
