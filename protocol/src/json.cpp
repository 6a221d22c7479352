#include "lariv/protocol/json.hpp"

namespace lariv::protocol {

namespace {

// Measures the nesting depth of JSON text in one pass, without allocating, so that deep input
// is refused before nlohmann builds (and later destroys) a tree for it. Brackets inside strings
// do not count. The text need not be valid JSON here: nlohmann validates it afterwards.
bool depth_within(std::string_view text, std::size_t max_depth) noexcept {
    std::size_t depth = 0;
    bool in_string = false;
    bool escaped = false;
    for (const char c : text) {
        if (in_string) {
            if (escaped) {
                escaped = false;
            } else if (c == '\\') {
                escaped = true;
            } else if (c == '"') {
                in_string = false;
            }
            continue;
        }
        switch (c) {
            case '"':
                in_string = true;
                break;
            case '[':
            case '{':
                if (++depth > max_depth) {
                    return false;
                }
                break;
            case ']':
            case '}':
                if (depth > 0) {
                    --depth;
                }
                break;
            default:
                break;
        }
    }
    return true;
}

template <class T>
void get_if_present(const nlohmann::json& j, const char* key, T& out) {
    if (const auto it = j.find(key); it != j.end()) {
        it->get_to(out);
    }
}

}  // namespace

std::optional<nlohmann::json> parse_json(std::string_view text, const limits& lim) {
    if (text.size() > lim.max_json || !depth_within(text, lim.max_json_depth)) {
        return std::nullopt;
    }
    try {
        auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
        if (j.is_discarded()) {
            return std::nullopt;
        }
        return j;
    } catch (const std::exception&) {
        // Only allocation can get here; report it as unparseable rather than crash the caller.
        return std::nullopt;
    }
}

void to_json(nlohmann::json& j, const session_id& id) {
    j = id.to_string();
}

void from_json(const nlohmann::json& j, session_id& id) {
    const auto& s = j.get_ref<const std::string&>();
    const auto parsed = session_id::parse(s);
    if (!parsed) {
        throw nlohmann::json::type_error::create(302, "session id must be 32 hex digits", &j);
    }
    id = *parsed;
}

void to_json(nlohmann::json& j, const limits& l) {
    j = nlohmann::json{{"max_line", l.max_line},
                       {"max_payload", l.max_payload},
                       {"max_json", l.max_json},
                       {"max_json_depth", l.max_json_depth},
                       {"max_list", l.max_list}};
}

void from_json(const nlohmann::json& j, limits& l) {
    get_if_present(j, "max_line", l.max_line);
    get_if_present(j, "max_payload", l.max_payload);
    get_if_present(j, "max_json", l.max_json);
    get_if_present(j, "max_json_depth", l.max_json_depth);
    get_if_present(j, "max_list", l.max_list);
}

void to_json(nlohmann::json& j, const hello_reply& r) {
    j = nlohmann::json{{"version", r.version}, {"session", r.session},
                       {"node", r.node},       {"server", r.server},
                       {"limits", r.limits},   {"heartbeat_ms", r.heartbeat_ms}};
}

void from_json(const nlohmann::json& j, hello_reply& r) {
    j.at("version").get_to(r.version);
    j.at("session").get_to(r.session);
    j.at("node").get_to(r.node);
    get_if_present(j, "server", r.server);
    get_if_present(j, "limits", r.limits);
    get_if_present(j, "heartbeat_ms", r.heartbeat_ms);
}

void to_json(nlohmann::json& j, const session_info& s) {
    j = nlohmann::json{{"id", s.id},           {"name", s.name},
                       {"age_ms", s.age_ms},   {"queued_bytes", s.queued_bytes},
                       {"msgs_in", s.msgs_in}, {"msgs_out", s.msgs_out}};
}

void from_json(const nlohmann::json& j, session_info& s) {
    j.at("id").get_to(s.id);
    get_if_present(j, "name", s.name);
    get_if_present(j, "age_ms", s.age_ms);
    get_if_present(j, "queued_bytes", s.queued_bytes);
    get_if_present(j, "msgs_in", s.msgs_in);
    get_if_present(j, "msgs_out", s.msgs_out);
}

void to_json(nlohmann::json& j, const list_page& p) {
    j = nlohmann::json{{"sessions", p.sessions}, {"next", nullptr}};
    if (p.next) {
        j["next"] = *p.next;
    }
}

void from_json(const nlohmann::json& j, list_page& p) {
    j.at("sessions").get_to(p.sessions);
    p.next.reset();
    if (const auto it = j.find("next"); it != j.end() && !it->is_null()) {
        p.next = it->get<session_id>();
    }
}

}  // namespace lariv::protocol
