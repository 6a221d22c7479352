// lariv_demo — what Lariv does, in one screen: threads register short-lived "sessions", look them
// up and evict them concurrently; stale ids are refused. Run by scripts/run.sh until larivd exists.
#include <lariv/lariv.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

namespace {
struct session {
    std::uint64_t owner;
    std::string name;
};
}  // namespace

int main() {
    lariv::Lariv<session> reg(lariv::Options{.buffer_capacity = 256, .node_id = 0x2A, .tag = 1});
    const lariv::Index first = reg.push(session{0, "first"});
    std::printf("registered session %s (node %u, slot %u, generation %u)\n",
                first.to_string().c_str(), first.node(), first.slot(), first.generation());
    reg.remove(first);
    const lariv::Index reused = reg.push(session{0, "second"});
    std::printf("evicted it; the slot went to %s\n", reused.to_string().c_str());
    std::printf("lookup with the old id finds %s\n", reg.get(first) ? "a session (BUG)" : "nothing");

    const unsigned threads = std::max(2U, std::thread::hardware_concurrency());
    constexpr int per_thread = 200000;
    std::atomic<std::uint64_t> found{0};
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> ts;
    for (unsigned t = 0; t < threads; ++t) {
        ts.emplace_back([&, t] {
            std::vector<lariv::Index> mine;
            for (int i = 0; i < per_thread; ++i) {
                mine.push_back(reg.push(session{t, "s"}));
                if (auto g = reg.get(mine[mine.size() / 2]); g && g->owner == t) {
                    found.fetch_add(1, std::memory_order_relaxed);
                }
                if (mine.size() > 64) {
                    reg.remove(mine.front());
                    mine.erase(mine.begin());
                }
            }
            for (const auto& i : mine) {
                reg.remove(i);
            }
        });
    }
    for (auto& t : ts) {
        t.join();
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double ops = 3.0 * threads * per_thread;
    std::printf("%u threads: %.0f push/get/remove ops in %.3f s (%.1f M ops/s), %llu lookups hit\n",
                threads, ops, secs, ops / secs / 1e6, static_cast<unsigned long long>(found.load()));
    std::printf("live sessions: %zu, buffers: %zu x %zu slots\n", reg.size(), reg.node_count(),
                reg.node_capacity());
    return 0;
}
