// Structured log events and larivd's two line formats (log.hpp; server/DESIGN.md, "Logging").
//
// How the JSON formatter sees an event's values: event() renders the text payload, points a
// thread-local at the event (its message, its fields and the payload's address) and logs the
// payload on the calling thread. spdlog's synchronous loggers format on that thread, inside the
// call, so the formatter finds the event when the payload it is given is that very text; any
// other message (a plain spdlog call, an async logger) is written as {"msg": <payload>}.
#include "lariv/server/log.hpp"

#include <chrono>
#include <ctime>

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace lariv::server::log {

namespace {

struct current_event {
    const char* payload;
    std::size_t size;
    std::string_view msg;
    const fields* values;
};
thread_local const current_event* tl_event = nullptr;

constexpr auto replace = nlohmann::json::error_handler_t::replace;

std::string dump(const fields& v) { return v.dump(-1, ' ', false, replace); }

/// A text value needs quotes when it could be misread: empty, blanks, quotes, '=', backslashes,
/// control bytes, and non-ASCII bytes (which may be invalid UTF-8; the quoting replaces those).
bool needs_quotes(std::string_view s) {
    if (s.empty()) {
        return true;
    }
    for (char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        if (c <= 0x20 || c >= 0x7f || c == '"' || c == '=' || c == '\\') {
            return true;
        }
    }
    return false;
}

void append(spdlog::memory_buf_t& dest, std::string_view s) { dest.append(s.data(), s.data() + s.size()); }

class json_line_formatter final : public spdlog::formatter {
public:
    explicit json_line_formatter(fields context) : context_(std::move(context)) {}

    void format(const spdlog::details::log_msg& m, spdlog::memory_buf_t& dest) override {
        append(dest, "{\"ts\":\"");
        timestamp(m.time, dest);
        append(dest, "\",\"level\":\"");
        append(dest, std::string_view(spdlog::level::to_string_view(m.level).data(),
                                      spdlog::level::to_string_view(m.level).size()));
        append(dest, "\",\"msg\":");
        const std::string_view payload(m.payload.data(), m.payload.size());
        const current_event* ev = tl_event;
        const bool mine = ev != nullptr && ev->payload == m.payload.data() && ev->size == m.payload.size();
        append(dest, quote(mine ? ev->msg : payload));
        if (mine && ev->values->is_object()) {
            for (const auto& [k, v] : ev->values->items()) {
                member(dest, k, v);
            }
        }
        for (const auto& [k, v] : context_.items()) {
            if (!(mine && ev->values->is_object() && ev->values->contains(k))) {
                member(dest, k, v);
            }
        }
        append(dest, "}");
        append(dest, spdlog::details::os::default_eol);
    }

    [[nodiscard]] std::unique_ptr<spdlog::formatter> clone() const override {
        return std::make_unique<json_line_formatter>(context_);
    }

private:
    static void member(spdlog::memory_buf_t& dest, const std::string& k, const fields& v) {
        const bool reserved = k == "ts" || k == "level" || k == "msg";
        append(dest, ",");
        append(dest, quote(reserved ? "field." + k : k));
        append(dest, ":");
        append(dest, dump(v));
    }

    /// "2024-05-01T12:00:00.123+02:00"; the part up to the seconds is cached per second (a
    /// formatter runs under its sink's lock).
    void timestamp(spdlog::log_clock::time_point t, spdlog::memory_buf_t& dest) {
        using namespace std::chrono;
        const auto secs = time_point_cast<seconds>(t);
        if (secs != cached_at_ || cached_.empty()) {
            cached_at_ = secs;
            const std::time_t tt = spdlog::log_clock::to_time_t(secs);
            std::tm tm{};
            ::localtime_r(&tt, &tm);
            char date[32];
            const std::size_t n = std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
            cached_.assign(date, n);
            const long off = tm.tm_gmtoff / 60;  // minutes east of UTC
            const long a = off < 0 ? -off : off;
            char zone[48];
            std::snprintf(zone, sizeof zone, "%c%02ld:%02ld", off < 0 ? '-' : '+', (a / 60) % 100, a % 60);
            zone_ = zone;
        }
        const auto ms = duration_cast<milliseconds>(t - secs).count();
        char frac[8];
        std::snprintf(frac, sizeof frac, ".%03d", static_cast<int>(ms));
        append(dest, cached_);
        append(dest, frac);
        append(dest, zone_);
    }

    fields context_;
    std::chrono::time_point<spdlog::log_clock, std::chrono::seconds> cached_at_{};
    std::string cached_;
    std::string zone_;
};

}  // namespace

bool enabled(spdlog::level::level_enum lvl) { return spdlog::default_logger_raw()->should_log(lvl); }

std::string quote(std::string_view s) { return dump(fields(std::string(s))); }

std::string render_text(std::string_view msg, const fields& f) {
    std::string out(msg);
    if (!f.is_object()) {
        return out;
    }
    for (const auto& [k, v] : f.items()) {
        out += ' ';
        out += needs_quotes(k) ? quote(k) : k;
        out += '=';
        if (v.is_string()) {
            const auto& s = v.get_ref<const std::string&>();
            out += needs_quotes(s) ? quote(s) : s;
        } else {
            const std::string d = dump(v);
            out += v.is_structured() && needs_quotes(d) ? quote(d) : d;
        }
    }
    return out;
}

void event(spdlog::level::level_enum lvl, std::string_view msg, const fields& f) {
    spdlog::logger* lg = spdlog::default_logger_raw();
    if (!lg->should_log(lvl)) {
        return;
    }
    const std::string text = render_text(msg, f);
    const current_event ev{text.data(), text.size(), msg, &f};
    const current_event* outer = tl_event;
    tl_event = &ev;
    lg->log(lvl, spdlog::string_view_t(text.data(), text.size()));  // spdlog catches what sinks throw
    tl_event = outer;
}

std::unique_ptr<spdlog::formatter> json_formatter(fields context) {
    return std::make_unique<json_line_formatter>(std::move(context));
}

std::unique_ptr<spdlog::formatter> text_formatter() {
    return std::make_unique<spdlog::pattern_formatter>("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
}

void setup_default_logger(std::string_view format, std::string_view level, fields context) {
    auto logger = spdlog::stderr_color_mt("larivd");
    spdlog::set_default_logger(logger);
    if (format == "json") {
        logger->set_formatter(json_formatter(std::move(context)));
    } else {
        logger->set_formatter(text_formatter());
    }
    spdlog::set_level(spdlog::level::from_str(std::string(level)));
}

}  // namespace lariv::server::log
