// tests/lariv/history.hpp — a per-index linearizability checker for Lariv histories
// (RELIABILITY.md section 4). Every push returns a fresh index, so a history splits per index
// (Herlihy-Wing locality) and each part is checked with interval rules in linear time.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "lariv/index.hpp"

namespace lariv::test {

enum class op_kind : std::uint8_t { push, get, get_mut, remove, take };

/// One completed operation. Times are steady_clock nanoseconds taken just before the call
/// (t_inv) and just after it returned (t_resp).
struct event {
    lariv::Index handle;
    std::uint64_t value = 0;  ///< pushed value, or the value a get/take observed
    std::int64_t t_inv = 0;
    std::int64_t t_resp = 0;
    op_kind kind = op_kind::push;
    bool ok = false;
};

/// Violation counts by class (section 4's table).
struct violations {
    std::uint64_t dup = 0;          ///< an index returned by two pushes, or removed twice
    std::uint64_t wrong_value = 0;  ///< take returned another value than the push stored
    std::uint64_t stale = 0;        ///< get observed another value: it reached another element
    std::uint64_t late = 0;         ///< get succeeded after a removal of its index had finished
    std::uint64_t lost = 0;         ///< an op failed with no removal that could explain it
    std::uint64_t orphan = 0;       ///< an op on an index that no push returned

    std::uint64_t total() const { return dup + wrong_value + stale + late + lost + orphan; }
    std::string to_string() const {
        return "dup=" + std::to_string(dup) + " wrong_value=" + std::to_string(wrong_value) +
               " stale=" + std::to_string(stale) + " late=" + std::to_string(late) +
               " lost=" + std::to_string(lost) + " orphan=" + std::to_string(orphan);
    }
    violations& operator+=(const violations& o) {
        dup += o.dup;
        wrong_value += o.wrong_value;
        stale += o.stale;
        late += o.late;
        lost += o.lost;
        orphan += o.orphan;
        return *this;
    }
};

/// What a checked history says about the indexes it saw.
struct history_result {
    violations v;
    std::uint64_t stale_handle_ops = 0;  ///< ops started after their index's removal completed
    /// Index -> pushed value for indexes with no successful removal: must be exactly the live set.
    std::unordered_map<lariv::Index, std::uint64_t> live;
};

/// Checks one quiescent epoch of events (all threads' logs together).
inline history_result check_history(const std::vector<const event*>& events) {
    struct per_index {
        const event* push = nullptr;
        int pushes = 0;
        std::vector<const event*> removals;  // successful remove/take
        std::vector<const event*> others;
    };
    std::unordered_map<lariv::Index, per_index> by;
    by.reserve(events.size() / 2 + 1);
    history_result res;
    for (const event* e : events) {
        per_index& p = by[e->handle];
        if (e->kind == op_kind::push) {
            ++p.pushes;
            p.push = e;
        } else if (e->ok && (e->kind == op_kind::remove || e->kind == op_kind::take)) {
            p.removals.push_back(e);
        } else {
            p.others.push_back(e);
        }
    }
    for (auto& [idx, p] : by) {
        if (p.pushes == 0) {
            res.v.orphan += p.others.size() + p.removals.size();
            continue;
        }
        if (p.pushes > 1) {
            res.v.dup += static_cast<std::uint64_t>(p.pushes - 1);  // handle ABA (check 1)
        }
        const std::uint64_t pushed = p.push->value;
        if (p.removals.size() > 1) {
            res.v.dup += p.removals.size() - 1;  // check 2
        }
        const event* rm = nullptr;  // the earliest-finishing successful removal
        for (const event* r : p.removals) {
            if (r->kind == op_kind::take && r->value != pushed) {
                ++res.v.wrong_value;  // check 2
            }
            if (rm == nullptr || r->t_resp < rm->t_resp) {
                rm = r;
            }
        }
        for (const event* o : p.others) {
            if (rm != nullptr && rm->t_resp < o->t_inv) {
                ++res.stale_handle_ops;
            }
            if (o->ok) {  // a successful get / get_mut
                if (o->value != pushed) {
                    ++res.v.stale;  // check 3
                }
                if (rm != nullptr && rm->t_resp < o->t_inv) {
                    ++res.v.late;  // check 4
                }
            } else {
                // check 5: a failure needs a successful removal that started before it ended.
                bool explained = false;
                for (const event* r : p.removals) {
                    explained = explained || r->t_inv < o->t_resp;
                }
                if (!explained) {
                    ++res.v.lost;
                }
            }
        }
        if (p.removals.empty()) {
            res.live.emplace(idx, pushed);
        }
    }
    return res;
}

}  // namespace lariv::test
