"""The built-in config sections: every key the server reads, with its type, default and help."""

from __future__ import annotations

from apiserver.config_values import (  # noqa: F401
    Key, Section, choice, int_range, parse_account_prefix, parse_bool, parse_host, parse_names, parse_networks,
    parse_plan_name, parse_positive_seconds, parse_str, parse_system_user_or_auto, port, server_url,
)

K = Key
BUILTIN_SECTIONS = (
    Section("soap", "The SOAP and XML-RPC API.", (
        K("enabled", parse_bool, "true",
          "Serve the API; false answers every API URL with 403 (scope cp.api).", runtime=True),
        K("max_body_size", int_range(1024, 64 << 20), "1048576",
          "Largest request body in bytes; larger gets 413 before it is stored.", runtime=True),
    )),
    Section("anvil", "Brute-force throttle for every authentication gate.", (
        K("limit", int_range(1, 100000), "20",
          "Failed authentications from one address within ttl that block it.", runtime=True),
        K("ttl", int_range(1, 86400 * 7), "900", "Seconds a failure is remembered and a block lasts.", runtime=True),
        K("min_attempts", int_range(0, 100000), "3",
          "Failures before answers to that address are delayed.", runtime=True),
        K("whitelist", parse_networks, "127.0.0.1",
          "Addresses or networks never counted (comma separated).", runtime=True),
        K("base_delay", int_range(0, 60000), "250",
          "Milliseconds of delay at the first delayed attempt: an attempt after n failures (m <= n < limit, m = "
          "max(min_attempts, 1)) waits min(max_delay, base_delay * 2^(n - m)) ms.", runtime=True),
        K("max_delay", int_range(0, 120000), "8000", "Cap of the delay in milliseconds.", runtime=True),
        K("ipv6_prefix", int_range(1, 128), "64",
          "IPv6 clients are counted per network of this prefix length.", runtime=True),
        K("max_tracked", int_range(100, 10_000_000), "200000",
          "Most addresses tracked at once; the oldest are pruned first."),
        K("backend", choice("memory", "redis"), "memory", "Where counters live: memory (one node) or redis (shared)."),
        K("redis_url", parse_str, "redis://127.0.0.1:6379/0",
          "Redis URL when backend=redis.", secret=True),  # may hold a password
    )),
    Section("auth", "Accounts, passwords, API keys and IP restrictions.", (
        K("retain_ui_password", parse_bool, "true",
          "Keep the UI password in the session, AES-256-GCM encrypted with secret.", runtime=True),
        K("secret", parse_str, "",
          "Key for encrypting API keys and session passwords; empty: generated into state_dir on init.", secret=True),
        K("min_pw_length", int_range(1, 1024), "7", "Shortest password accepted.", runtime=True),
        K("ip_restriction_limit", int_range(0, 100000), "50",
          "Most IP restrictions one account may have.", runtime=True),
        K("ip_restriction_cache_ttl", int_range(0, 3600), "5",
          "Seconds a node reuses an account's IP restrictions before checking them again: one row read, and all of "
          "them only if another node changed them (their changes show after at most this; rows edited by hand within "
          "60 s or this, whichever is longer; 0: read on every login).", runtime=True),
        K("account_cache_ttl", int_range(0, 3600), "5",
          "Seconds a node reuses an account's email address before reading it again (other nodes' changes show after "
          "at most this; 0: read on every call).", runtime=True),
        K("pbkdf2_iterations", int_range(1000, 10_000_000), "210000",
          "PBKDF2-HMAC-SHA512 iterations for new password hashes.", runtime=True),
        K("hash_threads", int_range(1, 256), "4",
          "Threads for password hashing (hashing releases the GIL); at a lowered hash_priority at most one hash per "
          "usable CPU computes at a time, the other logins queue."),
        K("hashes_per_address", int_range(1, 256), "1",
          "Password hashes computed at once for logins from one client address (Anvil's key); the others wait, and"
          " are refused unhashed once Anvil blocks the address.", runtime=True),
        K("hash_priority", choice("idle", "batch", "normal"), "idle",
          "CPU priority of the hashing threads: idle (SCHED_IDLE: request handling always first; logins use the CPU it"
          " leaves), batch (SCHED_BATCH at nice 19: logins also get a small share of a saturated core), normal."),
        K("key_cache_ttl", int_range(0, 3600), "60",
          "Seconds a verified API key is trusted without a database look-up (0: always look up).", runtime=True),
        K("show_suspension_reason", parse_bool, "true",
          "Tell the accounts of a suspended site why (admin_deactivate_site's reason, without its lines starting "
          "with # or ;) once their credentials were right.", runtime=True),
    )),
    Section("frontend", "HTTP and HTTPS listeners.", (
        K("bind", parse_str, "127.0.0.1", "Address the listeners bind to (0.0.0.0 or :: for all)."),
        K("http_port", port, "2082", "HTTP port; 0 disables the HTTP listener."),
        K("https_port", port, "2083", "HTTPS port; 0 disables the HTTPS listener."),
        K("https_only", parse_bool, "false", "Refuse remote HTTP (loopback HTTP keeps working).", runtime=True),
        K("tls_certificate", parse_str, "",
          "PEM certificate (chain) for HTTPS; empty: a self-signed one in state_dir."),
        K("tls_key", parse_str, "", "PEM private key for tls_certificate."),
        K("public_url", parse_str, "",
          "HTTPS URL named in https_only refusals; empty: derived from the request's host.", runtime=True),
    )),
    Section("core", "Process-wide settings.", (
        K("state_dir", parse_str, "../state", "Database, secret and certificate; relative to this file."),
        K("http_trusted_forward", parse_networks, "",
          "Proxies whose X-Forwarded-For is believed (comma separated).", runtime=True),
        K("db_threads", int_range(1, 256), "8",
          "Threads for database calls and blocking module functions; also the most DAV threads asking the "
          "database at once."),
        K("account_threads", int_range(1, 256), "3",
          "Most threads of the blocking pool (and of the DAV pool) one account's work holds at once (always one less"
          " than the pool): the rest of its work waits behind itself, never in front of other accounts'.",
          runtime=True),
        K("access_log", parse_bool, "false", "Log one line per HTTP request (never bodies or keys).", runtime=True),
        K("log_format", choice("text", "json"), "text", "Log as text lines or one JSON object per line."),
        K("debug", parse_bool, "false", "Debug logging (scope cp.debug).", runtime=True),
        K("cli_socket", parse_str, "apiserver.sock", "UNIX socket for cpcmd as root; relative to state_dir."),
        K("disabled_plugins", parse_names, "",
          "Installed plugins not to load: entry point or distribution names (comma separated); apiserver plugins lists"
          " them."),
        K("log_file", parse_str, "",
          "Log file, appended to and reopened on SIGHUP; relative to state_dir; empty: standard output."),
        K("shutdown_timeout", int_range(0, 3600), "10",
          "Seconds SIGTERM/SIGINT wait for calls in flight before the server exits."),
        K("metrics_allow", parse_networks, "127.0.0.1,::1",
          "Client addresses or networks that may read /health and /metrics (comma separated).", runtime=True),
    )),
    Section("session", "Sessions (esprit_id cookie).", (
        K("ttl", int_range(1, 86400 * 30), "900", "Seconds of inactivity after which a session ends.", runtime=True),
        K("backend", choice("memory", "redis", "db"), "memory",
          "Where sessions live: memory (one node), redis or db (shared)."),
        K("redis_url", parse_str, "redis://127.0.0.1:6379/0",
          "Redis URL when backend=redis.", secret=True),  # may hold a password
    )),
    Section("db", "Storage.", (
        K("url", parse_str, "", "SQLAlchemy URL; empty: SQLite file apiserver.db in state_dir.", secret=True),
    )),
    Section("mail", "Notices of password changes and resets and of unrecognized devices (the outbox).", (
        K("enabled", parse_bool, "true",
          "Queue notices in the outbox and send them by mail; false queues nothing.", runtime=True),
        K("smtp_host", parse_str, "127.0.0.1", "SMTP relay host.", runtime=True),
        K("smtp_port", port, "25", "SMTP relay port.", runtime=True),
        K("sender", parse_str, "apiserver@localhost", "From address of notices.", runtime=True),
        K("starttls", parse_bool, "false", "Use STARTTLS with the relay.", runtime=True),
        K("username", parse_str, "", "SMTP login; empty: none.", runtime=True),
        K("password", parse_str, "", "SMTP password.", runtime=True, secret=True),
        K("max_attempts", int_range(1, 1000), "10",
          "Delivery attempts of a notice before it is failed (it stays listed by admin_get_notices).", runtime=True),
        K("retry_base", int_range(1, 86400), "30",
          "Seconds before the second attempt; each further wait doubles, up to retry_cap.", runtime=True),
        K("retry_cap", int_range(1, 7 * 86400), "3600",
          "Longest wait in seconds between two attempts of a notice.", runtime=True),
        K("poll_interval", int_range(1, 3600), "10",
          "Seconds between looks at the outbox (a notice queued on this node is sent at once)."),
    )),
    Section("audit", "The security event trail.", (
        K("enabled", parse_bool, "true",
          "Record security events (logins, blocks, keys, passwords, restrictions, scopes, hijacks, failed notices).",
          runtime=True),
        K("keep_days", int_range(1, 36500), "90", "Days events are kept; older ones are pruned hourly.", runtime=True),
    )),
    Section("web", "Sites on disk and the web server that serves them.", (
        K("sites_root", parse_str, "sites",
          "Folder holding every site: site<N>/fst/ is what site N sees as /, <domain> and admin<N> link to it; "
          "relative to state_dir."),
        K("user", parse_system_user_or_auto, "",
          "The web server's system user (Fortification's ACLs, audit); empty: www-data, or apache where that is the "
          "one that exists."),
        K("site_owner", parse_str, "",
          "System user owning the sites' files; empty: the user running the server, or when that is root the system "
          "user 'apiserver' (made by apiserver init)."),
        K("system_accounts", choice("auto", "true", "false"), "auto",
          "Give every site its own system group admin<N> and every site user a system account <user>.<N> "
          "(its own uid, the site's gid); auto: when the server runs as root. false: one shared owner "
          "(site_owner) for every site."),
        K("account_prefix", parse_account_prefix, "",
          "Put '<prefix>-' before every system group and user name the server makes (two servers on one host)."),
    )),
    Section("plans", "Plans: the service values a site takes (admin_add_site, admin_edit_site).", (
        K("dir", parse_str, "",
          "Folder of plan files (<name>.ini, .skeleton.ini), relative to this file; empty: the plans shipped with "
          "apiserver (apiserver/lifecycle/plan_files)."),
        K("default", parse_plan_name, "basic", "The plan of a site that names none (a file <default>.ini in dir)."),
    )),
    Section("databases", "The MariaDB and PostgreSQL servers where sites get their database user (mysql.*, pgsql.*).", (
        K("mysql_admin_url", server_url("mysql"), "",
          "How apiserver administers MariaDB users: mysql://user[:password]@host[:port] of an account that may create "
          "users and grant (root); empty: no site may enable mysql.", secret=True),
        K("pgsql_admin_url", server_url("postgresql"), "",
          "How apiserver administers PostgreSQL roles: postgresql://user[:password]@host[:port][/database] of a "
          "superuser (postgres); empty: no site may enable pgsql.", secret=True),
        K("lock_timeout", parse_positive_seconds, "10",
          "Seconds a database create (mysql_create_database, pgsql_create_database) waits for the server's lock of "
          "its site, held by another create for that site (on any node, to keep dbasenum), before it fails with a "
          "fault naming the lock."),
    )),
    Section("usage", "Measured use of sites: storage (admin_get_usage('storage')) and traffic (bandwidth).", (
        K("recount_interval", int_range(60, 86400 * 7), "3600",
          "Seconds between the end of one background count of every site's storage and the start of the next (the "
          "first starts with the server); the answers give the last stored count."),
        K("group_quota", parse_bool, "true",
          "Read a site's use from the filesystem's group quota of its group admin<N> when the filesystem keeps one; "
          "false (or no quota): count the files of the site's home."),
        K("flush_interval", int_range(1, 3600), "60",
          "Seconds the traffic counted at the gates and reported by plugins is held in memory before it is stored "
          "(the answers include what is held)."),
    )),
    Section("rampart", "Rampart: the ban API (rampart_*) over Anvil and fail2ban.", (
        K("fail2ban_socket", parse_str, "/var/run/fail2ban/fail2ban.sock",
          "fail2ban's socket; when no fail2ban answers there only the jail anvil exists; empty: never ask fail2ban."),
        K("fail2ban_client", parse_str, "fail2ban-client", "fail2ban's client program (a path or a name on PATH)."),
        K("delegated_whitelist", int_range(-1, 4096), "0",
          "Addresses a site administrator may act on (whitelisted plus unbanned in 24 hours) when its rampart.max is "
          "null (-1: unlimited, 0: none).", runtime=True),
        K("whitelist_ttl", int_range(0, 3600), "10",
          "Seconds a node reuses the stored whitelist before reading it again (other nodes' changes show after at "
          "most this).", runtime=True),
    )),
    Section("security", "The security module: Fortification windows, the lockdown of binaries and the setuid scan.", (
        K("learning_window", int_range(60, 86400 * 30), "1800",
          "Seconds fortify mode learn keeps a site writable before what the web server wrote becomes its profile.",
          runtime=True),
        K("write_window", int_range(60, 86400 * 30), "600",
          "Seconds fortify mode write keeps a site writable before its previous mode (max when none) applies again.",
          runtime=True),
        K("template_root", parse_str, "/",
          "Filesystem template root that scan_setuid walks by default (ApisCP's FILESYSTEMTEMPLATE).", runtime=True),
        K("lockdown_binaries", parse_names,
          "rm mv cp cat whoami id perl perl5.* python python2* python3* php php[0-9]* ruby curl wget nc nc.* ncat "
          "netcat socat telnet gcc cc",
          "What security_lockdown forbids the web server user to run (and read): names or shell patterns looked up in"
          " lockdown_search_path, or absolute paths; also under template_root when that is not /.", runtime=True),
        K("lockdown_search_path", parse_names, "/usr/local/bin /usr/bin /bin /usr/local/sbin /usr/sbin /sbin",
          "Folders in which the names of lockdown_binaries are looked up.", runtime=True),
        K("lockdown_trees", parse_names, "/usr/local/share/pyenv /usr/local/share/rbenv /usr/local/share/goenv",
          "Folders (pyenv, rbenv, goenv) the web server user may not enter after security_lockdown.", runtime=True),
        K("lockdown_interval", int_range(60, 86400 * 30), "86400",
          "Seconds between re-applications of the last security_lockdown (a replaced binary is locked again)."),
    )),
    Section("dav", "WebDAV at /dav/ on both listeners: each account's site home (gate DAV).", (
        K("enabled", parse_bool, "true", "Serve /dav/; false answers it with 403 (scope apache.dav).", runtime=True),
        K("max_upload_size", int_range(1, 1 << 50), "1073741824",
          "Largest PUT body in bytes (spooled to a temporary file, never held in memory); larger gets 413 before it is"
          " stored.", runtime=True),
        K("max_bodies_in_flight", int_range(1, 1 << 50), "4294967296",
          "Total bytes of DAV request bodies received or kept at once, all clients together (each is read only"
          " after its credentials are checked); past it 503 with Retry-After.", runtime=True),
        K("threads", int_range(1, 256), "10", "Threads serving DAV requests (file work runs there, off the reactor)."),
        K("sendfile", parse_bool, "false",
          "Send plain GETs on plain TCP with sendfile (no copy; less server CPU) instead of the kernel copying from a"
          " read-only mapping of the file, as Apache's EnableSendfile Off does (faster for clients on this machine).",
          runtime=True),
        K("verified_password_ttl", int_range(0, 86400), "300",
          "Seconds a verified DAV password (kept as a keyed hash) is trusted without hashing again; a password change,"
          " reset or deletion ends it at once on this node, within 10 s on others (0: hash on every request).",
          runtime=True),
        K("max_properties", int_range(0, 10_000_000), "10000",
          "Dead properties (PROPPATCH) one site may keep, in the database; past it 507.", runtime=True),
        K("max_property_bytes", int_range(0, 1 << 40), "4194304",
          "Bytes of dead property names and values one site may keep; past it 507.", runtime=True),
        K("max_locks", int_range(0, 1_000_000), "100",
          "Live DAV locks one site may hold (in the database, or Redis with [anvil] backend=redis); past it 507.",
          runtime=True),
        K("max_lock_timeout", int_range(1, 31 * 86400), "86400",
          "Longest DAV lock in seconds: a longer or infinite timeout asked for is cut to it.", runtime=True),
        K("max_lock_owner", int_range(0, 65535), "4096",
          "Bytes of a LOCK's owner element; a larger one gets 403.", runtime=True),
    )),
    Section("geoip", "Geolocation of login notices.", (
        K("database", parse_str, "GeoLite2-City.mmdb", "GeoLite2 City database; relative to state_dir.", runtime=True),
        K("account_id", int_range(0, 2**31 - 1), "0",
          "MaxMind GeoIP2 web service account id; 0: not used (scope auth.geoip-key).", runtime=True),
        K("license_key", parse_str, "",
          "MaxMind GeoIP2 web service licence key (scope auth.geoip-key).", runtime=True, secret=True),
        K("service_host", parse_host, "geoip.maxmind.com",
          "Host (host:port) of the GeoIP2 web service, always reached over HTTPS; geolite.info for MaxMind's GeoLite2 "
          "web service.", runtime=True),
    )),
)
