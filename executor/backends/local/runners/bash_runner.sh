# Runner inside a sandbox: one persistent bash that evals every run in the same shell,
# so the working directory, variables and functions carry over between runs.
#
# It speaks the runner protocol described in executor/backends/local/protocol.py, in its bash
# form: a run is a header line, then the code and an env script. Its done has the exit status,
# never an error, value or images. The user's code runs without fds 3, 4, 7, 8, so it cannot
# reach the control stream or the streams the sentinels go to by their numbers. bash keeps
# copies of them (fds 10 and up) while the eval runs, though, and the run's id is in a
# variable: code can still write a done of its own there. The executor takes that as the code's
# own business (see protocol.py): it ends the run, and the real done that follows is skipped.

exec 7>&1 8>&2 </dev/null
printf '{"op":"ready"}\n' >&4
while :; do
    __ce_saved_lc_all=${LC_ALL-__ce_unset__}
    LC_ALL=C  # read -N counts characters; in the C locale a character is a byte
    IFS=' ' read -r -u 3 __ce_id __ce_clen __ce_elen || exit 0
    __ce_code= __ce_env=
    [ "$__ce_clen" -gt 0 ] && IFS= read -r -N "$__ce_clen" -u 3 __ce_code
    [ "$__ce_elen" -gt 0 ] && IFS= read -r -N "$__ce_elen" -u 3 __ce_env
    if [ "$__ce_saved_lc_all" = __ce_unset__ ]; then unset LC_ALL; else LC_ALL=$__ce_saved_lc_all; fi
    eval "$__ce_env"
    eval "$__ce_code" 3<&- 4>&- 7>&- 8>&-
    __ce_rc=$?
    printf '\036CE-END:%s\037\n' "$__ce_id" >&7
    printf '\036CE-END:%s\037\n' "$__ce_id" >&8
    printf '{"op":"done","id":"%s","exit_code":%d,"error":null,"value":null,"images":[]}\n' \
        "$__ce_id" "$__ce_rc" >&4
done
