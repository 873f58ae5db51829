# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_portcullis_global_optspecs
    string join \n log-format= h/help V/version
end

function __fish_portcullis_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_portcullis_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_portcullis_using_subcommand
    set -l cmd (__fish_portcullis_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c portcullis -n "__fish_portcullis_needs_command" -l log-format -d 'Log format on stderr: plain text (to journald without timestamps and with syslog priorities) or one JSON object per line' -r -f -a "plain\t'Text, one event per line (journald-aware: see docs/operations.md)'
json\t'One JSON object per line (timestamp, level, target, message, fields)'"
complete -c portcullis -n "__fish_portcullis_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c portcullis -n "__fish_portcullis_needs_command" -s V -l version -d 'Print version'
complete -c portcullis -n "__fish_portcullis_needs_command" -f -a "check" -d 'Validate a policy and show what it compiles to. Loads nothing'
complete -c portcullis -n "__fish_portcullis_needs_command" -f -a "run" -d 'Run the daemon: load, attach, pin, and keep the policy enforced'
complete -c portcullis -n "__fish_portcullis_needs_command" -f -a "reload" -d 'Ask the running daemon to reload its policy; exit 1 with the errors if the new policy is invalid (the old one keeps enforcing)'
complete -c portcullis -n "__fish_portcullis_needs_command" -f -a "status" -d 'Show interfaces, policy, generation and counters (also while the daemon is down: read from the pins)'
complete -c portcullis -n "__fish_portcullis_needs_command" -f -a "detach" -d 'Remove the filter: detach the program and delete the pins (or, with --iface, only that interface\'s link)'
complete -c portcullis -n "__fish_portcullis_needs_command" -f -a "hash-password" -d 'Print an argon2id hash of a password for `[metrics] basic_auth`'
complete -c portcullis -n "__fish_portcullis_needs_command" -f -a "explain" -d 'Show what the filter in force does with one packet, and which policy lines decide it (runs the pinned program; works with the daemon down)'
complete -c portcullis -n "__fish_portcullis_needs_command" -f -a "events" -d 'Stream sampled decisions (time, interface, addresses, ports, reason, zone) from the running daemon; see `sampling` for what is sampled'
complete -c portcullis -n "__fish_portcullis_needs_command" -f -a "top" -d 'Show the sources and zones with the most dropped events over a window'
complete -c portcullis -n "__fish_portcullis_needs_command" -f -a "sampling" -d 'Show or set what the filter samples into the event stream, and how fast (at run time; kept across restarts until --reset)'
complete -c portcullis -n "__fish_portcullis_needs_command" -f -a "log-packets" -d 'Switch packet logging on or off at run time: the daemon logs each sampled decision with its addresses, interface and zone'
complete -c portcullis -n "__fish_portcullis_needs_command" -f -a "ban" -d 'Ban sources until a time or until removed, beside the policy (the running daemon keeps them across restarts; the way in for detectors and scripts)'
complete -c portcullis -n "__fish_portcullis_using_subcommand check" -s p -l policy -d 'The policy file, as FILE (`-p -`: stdin)' -r -F
complete -c portcullis -n "__fish_portcullis_using_subcommand check" -s o -l output -d 'Output format for stdout' -r -f -a "text\t'For people'
json\t'One JSON document'"
complete -c portcullis -n "__fish_portcullis_using_subcommand check" -l state-dir -d 'The daemon\'s state directory: `[blocklist] feeds` are read from its cache (as the daemon reads them)' -r -F
complete -c portcullis -n "__fish_portcullis_using_subcommand check" -l log-format -d 'Log format on stderr: plain text (to journald without timestamps and with syslog priorities) or one JSON object per line' -r -f -a "plain\t'Text, one event per line (journald-aware: see docs/operations.md)'
json\t'One JSON object per line (timestamp, level, target, message, fields)'"
complete -c portcullis -n "__fish_portcullis_using_subcommand check" -l strict -d 'Treat warnings (W001…, see docs/policy.md) as errors: exit 1 if any'
complete -c portcullis -n "__fish_portcullis_using_subcommand check" -s q -l quiet -d 'Print nothing on success: only errors and warnings (stderr), and the exit status'
complete -c portcullis -n "__fish_portcullis_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c portcullis -n "__fish_portcullis_using_subcommand run" -s p -l policy -d 'The policy file' -r -F
complete -c portcullis -n "__fish_portcullis_using_subcommand run" -s i -l iface -d 'Interface to filter (repeatable, each once); overrides the policy\'s `interfaces`' -r
complete -c portcullis -n "__fish_portcullis_using_subcommand run" -l pin-root -d 'Where maps and links are pinned (must be on a bpffs)' -r -F
complete -c portcullis -n "__fish_portcullis_using_subcommand run" -l control-socket -d 'The control socket `reload`, `status` and `detach` talk to' -r -F
complete -c portcullis -n "__fish_portcullis_using_subcommand run" -l metrics-listen -d 'Metrics address; overrides the policy\'s [metrics] listen' -r
complete -c portcullis -n "__fish_portcullis_using_subcommand run" -l mode -d 'Attach new links in this XDP mode only; fail rather than fall back (default: native, generic if the driver refuses)' -r -f -a "native\t'In the driver (XDP native)'
generic\t'In the kernel\'s generic path (slower; works on every device)'"
complete -c portcullis -n "__fish_portcullis_using_subcommand run" -l wait-iface -d 'Wait up to SECONDS for missing interfaces to appear before failing (for NICs that show up late at boot)' -r
complete -c portcullis -n "__fish_portcullis_using_subcommand run" -l state-dir -d 'Where bans and the feeds\' last good copies are kept across restarts and reboots' -r -F
complete -c portcullis -n "__fish_portcullis_using_subcommand run" -l log-format -d 'Log format on stderr: plain text (to journald without timestamps and with syslog priorities) or one JSON object per line' -r -f -a "plain\t'Text, one event per line (journald-aware: see docs/operations.md)'
json\t'One JSON object per line (timestamp, level, target, message, fields)'"
complete -c portcullis -n "__fish_portcullis_using_subcommand run" -l detach-on-exit -d 'Remove the filter when the daemon exits (default: it stays in force)'
complete -c portcullis -n "__fish_portcullis_using_subcommand run" -l log-packets -d 'Deprecated: `portcullis log-packets on` does this at run time. Switches packet logging on (every decision sampled, at the configured rate)'
complete -c portcullis -n "__fish_portcullis_using_subcommand run" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c portcullis -n "__fish_portcullis_using_subcommand reload" -l control-socket -d 'The running daemon\'s control socket' -r -F
complete -c portcullis -n "__fish_portcullis_using_subcommand reload" -s o -l output -d 'Output format for stdout (json: also on failure, as {"ok":false,"error":…})' -r -f -a "text\t'For people'
json\t'One JSON document'"
complete -c portcullis -n "__fish_portcullis_using_subcommand reload" -l log-format -d 'Log format on stderr: plain text (to journald without timestamps and with syslog priorities) or one JSON object per line' -r -f -a "plain\t'Text, one event per line (journald-aware: see docs/operations.md)'
json\t'One JSON object per line (timestamp, level, target, message, fields)'"
complete -c portcullis -n "__fish_portcullis_using_subcommand reload" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c portcullis -n "__fish_portcullis_using_subcommand status" -l pin-root -d 'Where the filter is pinned' -r -F
complete -c portcullis -n "__fish_portcullis_using_subcommand status" -l control-socket -d 'The daemon\'s control socket (to tell whether it runs)' -r -F
complete -c portcullis -n "__fish_portcullis_using_subcommand status" -s o -l output -d 'Output format for stdout (json: also on failure, as {"ok":false,"error":…})' -r -f -a "text\t'For people'
json\t'One JSON document'"
complete -c portcullis -n "__fish_portcullis_using_subcommand status" -l log-format -d 'Log format on stderr: plain text (to journald without timestamps and with syslog priorities) or one JSON object per line' -r -f -a "plain\t'Text, one event per line (journald-aware: see docs/operations.md)'
json\t'One JSON object per line (timestamp, level, target, message, fields)'"
complete -c portcullis -n "__fish_portcullis_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c portcullis -n "__fish_portcullis_using_subcommand detach" -l pin-root -d 'Where the filter is pinned' -r -F
complete -c portcullis -n "__fish_portcullis_using_subcommand detach" -l control-socket -d 'The daemon\'s control socket (a running daemon is asked to detach)' -r -F
complete -c portcullis -n "__fish_portcullis_using_subcommand detach" -l iface -d 'Remove the filter from this interface only; the others keep it' -r
complete -c portcullis -n "__fish_portcullis_using_subcommand detach" -s o -l output -d 'Output format for stdout (json: also on failure, as {"ok":false,"error":…})' -r -f -a "text\t'For people'
json\t'One JSON document'"
complete -c portcullis -n "__fish_portcullis_using_subcommand detach" -l log-format -d 'Log format on stderr: plain text (to journald without timestamps and with syslog priorities) or one JSON object per line' -r -f -a "plain\t'Text, one event per line (journald-aware: see docs/operations.md)'
json\t'One JSON object per line (timestamp, level, target, message, fields)'"
complete -c portcullis -n "__fish_portcullis_using_subcommand detach" -l force -d 'Stop the daemon that owns the pin root first (SIGTERM, 10 s), even if the control socket does not reach it'
complete -c portcullis -n "__fish_portcullis_using_subcommand detach" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c portcullis -n "__fish_portcullis_using_subcommand hash-password" -l log-format -d 'Log format on stderr: plain text (to journald without timestamps and with syslog priorities) or one JSON object per line' -r -f -a "plain\t'Text, one event per line (journald-aware: see docs/operations.md)'
json\t'One JSON object per line (timestamp, level, target, message, fields)'"
complete -c portcullis -n "__fish_portcullis_using_subcommand hash-password" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c portcullis -n "__fish_portcullis_using_subcommand explain" -l from -d 'Source address of the packet (IPv4 or IPv6)' -r
complete -c portcullis -n "__fish_portcullis_using_subcommand explain" -l to -d 'Destination port and protocol: 8889/tcp, 53/udp, 2905/sctp' -r
complete -c portcullis -n "__fish_portcullis_using_subcommand explain" -l iface -d 'Run the program of this interface\'s link (default: the first attached)' -r
complete -c portcullis -n "__fish_portcullis_using_subcommand explain" -l vlan -d 'Send the frame with one 802.1Q tag of this VLAN id' -r
complete -c portcullis -n "__fish_portcullis_using_subcommand explain" -l fragment -d 'Send a first fragment (offset 0, more to follow) or a later one (no ports)' -r
complete -c portcullis -n "__fish_portcullis_using_subcommand explain" -l dst -d 'Destination address (default 192.0.2.1 or 2001:db8::1; not judged)' -r
complete -c portcullis -n "__fish_portcullis_using_subcommand explain" -l pin-root -d 'Where the filter\'s maps and links are pinned' -r -F
complete -c portcullis -n "__fish_portcullis_using_subcommand explain" -l state-dir -d 'The daemon\'s state directory (the feeds\' cached copies are searched for the blocklist line)' -r -F
complete -c portcullis -n "__fish_portcullis_using_subcommand explain" -s o -l output -d 'Output format for stdout' -r -f -a "text\t''
json\t''"
complete -c portcullis -n "__fish_portcullis_using_subcommand explain" -l log-format -d 'Log format on stderr: plain text (to journald without timestamps and with syslog priorities) or one JSON object per line' -r -f -a "plain\t'Text, one event per line (journald-aware: see docs/operations.md)'
json\t'One JSON object per line (timestamp, level, target, message, fields)'"
complete -c portcullis -n "__fish_portcullis_using_subcommand explain" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c portcullis -n "__fish_portcullis_using_subcommand events" -l reason -d 'Only events of this reason (repeatable): blocklist, not_allowed, unmatched, …' -r
complete -c portcullis -n "__fish_portcullis_using_subcommand events" -l zone -d 'Only events of this zone (repeatable; `global` for the defaults and the blocklist, `failsafe`)' -r
complete -c portcullis -n "__fish_portcullis_using_subcommand events" -l iface -d 'Only events that arrived on this interface (repeatable)' -r
complete -c portcullis -n "__fish_portcullis_using_subcommand events" -l count -d 'Stop after N events (that pass the filters)' -r
complete -c portcullis -n "__fish_portcullis_using_subcommand events" -l timeout -d 'Stop after this long (500ms, 10s, 2m); default: run until interrupted' -r
complete -c portcullis -n "__fish_portcullis_using_subcommand events" -l control-socket -d 'The daemon\'s control socket' -r -F
complete -c portcullis -n "__fish_portcullis_using_subcommand events" -s o -l output -d 'Output: text lines, or one JSON record per line' -r -f -a "text\t'For people'
json\t'JSON: one record per line (`events`), one document (`top`, `sampling`)'"
complete -c portcullis -n "__fish_portcullis_using_subcommand events" -l log-format -d 'Log format on stderr: plain text (to journald without timestamps and with syslog priorities) or one JSON object per line' -r -f -a "plain\t'Text, one event per line (journald-aware: see docs/operations.md)'
json\t'One JSON object per line (timestamp, level, target, message, fields)'"
complete -c portcullis -n "__fish_portcullis_using_subcommand events" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c portcullis -n "__fish_portcullis_using_subcommand top" -l window -d 'How long to watch (500ms, 10s, 2m)' -r
complete -c portcullis -n "__fish_portcullis_using_subcommand top" -l limit -d 'Rows per table' -r
complete -c portcullis -n "__fish_portcullis_using_subcommand top" -l control-socket -d 'The daemon\'s control socket' -r -F
complete -c portcullis -n "__fish_portcullis_using_subcommand top" -s o -l output -d 'Output format for stdout' -r -f -a "text\t'For people'
json\t'JSON: one record per line (`events`), one document (`top`, `sampling`)'"
complete -c portcullis -n "__fish_portcullis_using_subcommand top" -l log-format -d 'Log format on stderr: plain text (to journald without timestamps and with syslog priorities) or one JSON object per line' -r -f -a "plain\t'Text, one event per line (journald-aware: see docs/operations.md)'
json\t'One JSON object per line (timestamp, level, target, message, fields)'"
complete -c portcullis -n "__fish_portcullis_using_subcommand top" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c portcullis -n "__fish_portcullis_using_subcommand sampling" -l rate -d 'Events per second per CPU (1 to 1000000)' -r
complete -c portcullis -n "__fish_portcullis_using_subcommand sampling" -l burst -d 'Events a CPU may send at once after a quiet spell (1 to 1000000)' -r
complete -c portcullis -n "__fish_portcullis_using_subcommand sampling" -l pin-root -d 'Where the filter is pinned' -r -F
complete -c portcullis -n "__fish_portcullis_using_subcommand sampling" -l control-socket -d 'The daemon\'s control socket (for --reset)' -r -F
complete -c portcullis -n "__fish_portcullis_using_subcommand sampling" -s o -l output -d 'Output format for stdout' -r -f -a "text\t'For people'
json\t'JSON: one record per line (`events`), one document (`top`, `sampling`)'"
complete -c portcullis -n "__fish_portcullis_using_subcommand sampling" -l log-format -d 'Log format on stderr: plain text (to journald without timestamps and with syslog priorities) or one JSON object per line' -r -f -a "plain\t'Text, one event per line (journald-aware: see docs/operations.md)'
json\t'One JSON object per line (timestamp, level, target, message, fields)'"
complete -c portcullis -n "__fish_portcullis_using_subcommand sampling" -l reset -d 'Return to the policy\'s `[events]` (asks a running daemon to reload)'
complete -c portcullis -n "__fish_portcullis_using_subcommand sampling" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c portcullis -n "__fish_portcullis_using_subcommand log-packets" -l pin-root -d 'Where the filter is pinned' -r -F
complete -c portcullis -n "__fish_portcullis_using_subcommand log-packets" -s o -l output -d 'Output format for stdout' -r -f -a "text\t'For people'
json\t'JSON: one record per line (`events`), one document (`top`, `sampling`)'"
complete -c portcullis -n "__fish_portcullis_using_subcommand log-packets" -l log-format -d 'Log format on stderr: plain text (to journald without timestamps and with syslog priorities) or one JSON object per line' -r -f -a "plain\t'Text, one event per line (journald-aware: see docs/operations.md)'
json\t'One JSON object per line (timestamp, level, target, message, fields)'"
complete -c portcullis -n "__fish_portcullis_using_subcommand log-packets" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c portcullis -n "__fish_portcullis_using_subcommand ban; and not __fish_seen_subcommand_from add del list flush" -l control-socket -d 'The running daemon\'s control socket' -r -F
complete -c portcullis -n "__fish_portcullis_using_subcommand ban; and not __fish_seen_subcommand_from add del list flush" -s o -l output -d 'Output format for stdout (json: also on failure, as {"ok":false,"error":…})' -r -f -a "text\t''
json\t''"
complete -c portcullis -n "__fish_portcullis_using_subcommand ban; and not __fish_seen_subcommand_from add del list flush" -l log-format -d 'Log format on stderr: plain text (to journald without timestamps and with syslog priorities) or one JSON object per line' -r -f -a "plain\t'Text, one event per line (journald-aware: see docs/operations.md)'
json\t'One JSON object per line (timestamp, level, target, message, fields)'"
complete -c portcullis -n "__fish_portcullis_using_subcommand ban; and not __fish_seen_subcommand_from add del list flush" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c portcullis -n "__fish_portcullis_using_subcommand ban; and not __fish_seen_subcommand_from add del list flush" -f -a "add" -d 'Drop these sources on every port but failsafe ones, until --for runs out (enforced by the datapath itself) or `ban del`. Banning a banned prefix again replaces its expiry, tag and reason'
complete -c portcullis -n "__fish_portcullis_using_subcommand ban; and not __fish_seen_subcommand_from add del list flush" -f -a "del" -d 'Remove the bans of exactly these addresses/prefixes'
complete -c portcullis -n "__fish_portcullis_using_subcommand ban; and not __fish_seen_subcommand_from add del list flush" -f -a "list" -d 'Show the bans in force'
complete -c portcullis -n "__fish_portcullis_using_subcommand ban; and not __fish_seen_subcommand_from add del list flush" -f -a "flush" -d 'Remove every ban (of --tag, if given)'
complete -c portcullis -n "__fish_portcullis_using_subcommand ban; and __fish_seen_subcommand_from add" -l file -d 'A file of addresses/prefixes, one a line (`#` comments), read by the daemon: the way to add many in one request' -r -F
complete -c portcullis -n "__fish_portcullis_using_subcommand ban; and __fish_seen_subcommand_from add" -l for -d 'How long: 90s, 15m, 4h, 2d, 1w (default: until removed)' -r
complete -c portcullis -n "__fish_portcullis_using_subcommand ban; and __fish_seen_subcommand_from add" -l tag -d 'Who banned (fail2ban, crowdsec:…): counted per tag; `flush --tag`' -r
complete -c portcullis -n "__fish_portcullis_using_subcommand ban; and __fish_seen_subcommand_from add" -l reason -d 'Free text kept with the ban (`ban list`)' -r
complete -c portcullis -n "__fish_portcullis_using_subcommand ban; and __fish_seen_subcommand_from add" -l control-socket -d 'The running daemon\'s control socket' -r -F
complete -c portcullis -n "__fish_portcullis_using_subcommand ban; and __fish_seen_subcommand_from add" -s o -l output -d 'Output format for stdout (json: also on failure, as {"ok":false,"error":…})' -r -f -a "text\t''
json\t''"
complete -c portcullis -n "__fish_portcullis_using_subcommand ban; and __fish_seen_subcommand_from add" -l log-format -d 'Log format on stderr: plain text (to journald without timestamps and with syslog priorities) or one JSON object per line' -r -f -a "plain\t'Text, one event per line (journald-aware: see docs/operations.md)'
json\t'One JSON object per line (timestamp, level, target, message, fields)'"
complete -c portcullis -n "__fish_portcullis_using_subcommand ban; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c portcullis -n "__fish_portcullis_using_subcommand ban; and __fish_seen_subcommand_from del" -l control-socket -d 'The running daemon\'s control socket' -r -F
complete -c portcullis -n "__fish_portcullis_using_subcommand ban; and __fish_seen_subcommand_from del" -s o -l output -d 'Output format for stdout (json: also on failure, as {"ok":false,"error":…})' -r -f -a "text\t''
json\t''"
complete -c portcullis -n "__fish_portcullis_using_subcommand ban; and __fish_seen_subcommand_from del" -l log-format -d 'Log format on stderr: plain text (to journald without timestamps and with syslog priorities) or one JSON object per line' -r -f -a "plain\t'Text, one event per line (journald-aware: see docs/operations.md)'
json\t'One JSON object per line (timestamp, level, target, message, fields)'"
complete -c portcullis -n "__fish_portcullis_using_subcommand ban; and __fish_seen_subcommand_from del" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c portcullis -n "__fish_portcullis_using_subcommand ban; and __fish_seen_subcommand_from list" -l tag -d 'Only the bans carrying this tag' -r
complete -c portcullis -n "__fish_portcullis_using_subcommand ban; and __fish_seen_subcommand_from list" -l control-socket -d 'The running daemon\'s control socket' -r -F
complete -c portcullis -n "__fish_portcullis_using_subcommand ban; and __fish_seen_subcommand_from list" -s o -l output -d 'Output format for stdout (json: also on failure, as {"ok":false,"error":…})' -r -f -a "text\t''
json\t''"
complete -c portcullis -n "__fish_portcullis_using_subcommand ban; and __fish_seen_subcommand_from list" -l log-format -d 'Log format on stderr: plain text (to journald without timestamps and with syslog priorities) or one JSON object per line' -r -f -a "plain\t'Text, one event per line (journald-aware: see docs/operations.md)'
json\t'One JSON object per line (timestamp, level, target, message, fields)'"
complete -c portcullis -n "__fish_portcullis_using_subcommand ban; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c portcullis -n "__fish_portcullis_using_subcommand ban; and __fish_seen_subcommand_from flush" -l tag -d 'Only the bans carrying this tag (fail2ban\'s jail, say)' -r
complete -c portcullis -n "__fish_portcullis_using_subcommand ban; and __fish_seen_subcommand_from flush" -l control-socket -d 'The running daemon\'s control socket' -r -F
complete -c portcullis -n "__fish_portcullis_using_subcommand ban; and __fish_seen_subcommand_from flush" -s o -l output -d 'Output format for stdout (json: also on failure, as {"ok":false,"error":…})' -r -f -a "text\t''
json\t''"
complete -c portcullis -n "__fish_portcullis_using_subcommand ban; and __fish_seen_subcommand_from flush" -l log-format -d 'Log format on stderr: plain text (to journald without timestamps and with syslog priorities) or one JSON object per line' -r -f -a "plain\t'Text, one event per line (journald-aware: see docs/operations.md)'
json\t'One JSON object per line (timestamp, level, target, message, fields)'"
complete -c portcullis -n "__fish_portcullis_using_subcommand ban; and __fish_seen_subcommand_from flush" -s h -l help -d 'Print help (see more with \'--help\')'
