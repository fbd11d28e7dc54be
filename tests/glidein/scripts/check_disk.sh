#!/bin/bash
# check_disk.sh -- a validation script written in GlideinWMS's documented conventions (reference §10), run
# unmodified by cvmfs-pilot's tests: "check_disk.sh glidein_config ID".
# Fails (WN_Resource) when the work directory has less free space than CHECK_MIN_DISK_MB (read with the id's
# prefix first, e.g. ENTRY_CHECK_MIN_DISK_MB for the entry); a threshold that is not a number is a Config error.
# Publishes MY_CHECK_RESULT in glidein_config, the job environment and the startd ClassAd.

glidein_config="$1"
add_config_line_source=$(grep -m1 '^ADD_CONFIG_LINE_SOURCE ' "$glidein_config" | cut -d ' ' -f 2-)
source "$add_config_line_source"
error_gen=$(gconfig_get ERROR_GEN_PATH "$glidein_config")
condor_vars_file=$(gconfig_get CONDOR_VARS_FILE "$glidein_config")
source "$(gconfig_get GET_ID_SELECTORS_SOURCE "$glidein_config")"

id="${2:-main}"
prefix=$(get_prefix "$id")
work_dir=$(gconfig_get GLIDEIN_WORK_DIR)

min_mb=$(gconfig_get_trim "${prefix}CHECK_MIN_DISK_MB")
if [[ -z "$min_mb" ]]; then
    min_mb=$(gconfig_get_trim CHECK_MIN_DISK_MB)
fi
if ! [[ "$min_mb" =~ ^[0-9]+$ ]]; then
    "$error_gen" -error "check_disk.sh" "Config" "CHECK_MIN_DISK_MB is not a number of MB: '$min_mb'" \
        "attribute" "${prefix}CHECK_MIN_DISK_MB"
    exit 1
fi

free=$(df -Pk "$work_dir" | awk 'NR == 2 { print int($4 / 1024) }')
if [[ "$free" -lt "$min_mb" ]]; then
    gconfig_add MY_CHECK_RESULT "FAILED ${free} MB free, ${min_mb} MB needed"
    add_condor_vars_line MY_CHECK_RESULT "S" "-" "+" "Y" "Y" "+"
    "$error_gen" -error "check_disk.sh" "WN_Resource" "not enough disk" "free_mb" "$free"
    exit 1
fi

gconfig_add MY_CHECK_RESULT "OK ${free} MB free"
add_condor_vars_line MY_CHECK_RESULT "S" "-" "+" "Y" "Y" "+"
"$error_gen" -ok "check_disk.sh" "free_mb" "$free"
exit 0
