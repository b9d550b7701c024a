#!/bin/sh
# Creates the tokens compose.yaml hands to its containers as compose secrets, once, before the first
# `docker compose up`:
#
#   compose/secrets/webhook-token   Alertmanager sends it (credentials_file), Remediator checks it
#                                   (WEBHOOK_TOKEN_FILE)
#   compose/secrets/api-token       Remediator's incidents API, for approvals (REMEDIATOR_API_TOKEN_FILE)
#
# A file that exists and is not empty is kept, so running this again changes nothing; to rotate a
# token, delete its file, run this, and `docker compose up -d --force-recreate alertmanager remediator`.
# To bring your own token, write it to the file instead (one line, no spaces).
#
# The tokens never enter the repository (compose/secrets/.gitignore), an image (.dockerignore) or
# compose.yaml. Compose mounts each file into the containers that name it, with the host file's
# owner and mode: the containers run as other users (Alertmanager as nobody, Remediator as uid
# 10001), so the files are readable by all, and the folder that holds them by its owner alone, which
# keeps the other accounts of this machine out.
set -eu

dir=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)/secrets
mkdir -p "$dir"
chmod 0700 "$dir"

for name in webhook-token api-token; do
    file=$dir/$name
    if [ -s "$file" ]; then
        echo "kept    $file"
        continue
    fi
    # 32 random bytes as 64 hex digits: safe in an HTTP header and in a file, with no quoting.
    token=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
    if [ ${#token} -ne 64 ]; then
        echo "init-secrets.sh: could not read 32 random bytes from /dev/urandom" >&2
        exit 1
    fi
    # Written under another name and renamed, so a container never reads half a token.
    printf '%s\n' "$token" > "$file.new"
    chmod 0644 "$file.new"
    mv "$file.new" "$file"
    echo "created $file"
done
