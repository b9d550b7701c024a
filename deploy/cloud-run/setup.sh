#!/usr/bin/env bash
# Remediator on Cloud Run, from an empty project: APIs, a service account with the least-privilege
# custom role (remediator-role.yaml), Cloud SQL for PostgreSQL, three secrets, the schema, the
# service (service.yaml) and the Cloud Monitoring alerting policies (monitoring/policies/).
# Safe to run again: what exists is kept (the role and the service are updated).
#
#   PROJECT_ID=my-project REGION=europe-west1 \
#   IMAGE=europe-west1-docker.pkg.dev/my-project/remediator/remediator:1 \
#   MANAGED_SERVICES=shop,checkout deploy/cloud-run/setup.sh
#
# Settings (environment):
#   PROJECT_ID        required
#   IMAGE             required: the image built from this repository's Dockerfile
#   REGION            default europe-west1: where Remediator, its database and the services run
#   MANAGED_SERVICES  comma-separated Cloud Run services Remediator may act on (actAs is granted on
#                     their runtime service accounts); default: none yet
#   SQL_INSTANCE      default remediator (created as PostgreSQL 16, the smallest shared-core tier)
#   SERVICE_ACCOUNT   default remediator (its e-mail is remediator@PROJECT_ID.iam.gserviceaccount.com)
#   ROLE_ID           default remediator
#   GCLOUD            default gcloud
# Docs: docs/deploy-cloud-run.md.

set -euo pipefail

: "${PROJECT_ID:?set PROJECT_ID}"
: "${IMAGE:?set IMAGE (build it with: gcloud builds submit --tag IMAGE .)}"
REGION=${REGION:-europe-west1}
MANAGED_SERVICES=${MANAGED_SERVICES:-}
SQL_INSTANCE=${SQL_INSTANCE:-remediator}
SERVICE_ACCOUNT_NAME=${SERVICE_ACCOUNT:-remediator}
ROLE_ID=${ROLE_ID:-remediator}
GCLOUD=${GCLOUD:-gcloud}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
account="${SERVICE_ACCOUNT_NAME}@${PROJECT_ID}.iam.gserviceaccount.com"
member="serviceAccount:${account}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

gcloud_() {
  "$GCLOUD" --project "$PROJECT_ID" --quiet "$@"
}

say() {
  printf '== %s\n' "$*" >&2
}

random_token() {
  head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 40
}

say "enabling the APIs Remediator uses"
gcloud_ services enable run.googleapis.com sqladmin.googleapis.com secretmanager.googleapis.com \
  monitoring.googleapis.com logging.googleapis.com iam.googleapis.com

say "service account ${account}"
if ! gcloud_ iam service-accounts describe "$account" >/dev/null 2>&1; then
  gcloud_ iam service-accounts create "$SERVICE_ACCOUNT_NAME" --display-name "Remediator"
fi

say "custom role ${ROLE_ID} (remediator-role.yaml)"
if gcloud_ iam roles describe "$ROLE_ID" >/dev/null 2>&1; then
  gcloud_ iam roles update "$ROLE_ID" --file "$here/remediator-role.yaml"
else
  gcloud_ iam roles create "$ROLE_ID" --file "$here/remediator-role.yaml"
fi
gcloud_ projects add-iam-policy-binding "$PROJECT_ID" --member "$member" \
  --role "projects/${PROJECT_ID}/roles/${ROLE_ID}" --condition None >/dev/null
# The Cloud Run platform connects to Cloud SQL as the service's identity.
gcloud_ projects add-iam-policy-binding "$PROJECT_ID" --member "$member" \
  --role roles/cloudsql.client --condition None >/dev/null

say "Cloud SQL for PostgreSQL: instance ${SQL_INSTANCE}, database and user remediator"
if ! gcloud_ sql instances describe "$SQL_INSTANCE" >/dev/null 2>&1; then
  gcloud_ sql instances create "$SQL_INSTANCE" --database-version POSTGRES_16 --edition ENTERPRISE \
    --tier db-g1-small --region "$REGION"
fi
if ! gcloud_ sql databases describe remediator --instance "$SQL_INSTANCE" >/dev/null 2>&1; then
  gcloud_ sql databases create remediator --instance "$SQL_INSTANCE"
fi

connection="${PROJECT_ID}:${REGION}:${SQL_INSTANCE}"
secret() { # name, value-producing command: create once, never overwrite a value that exists
  local name=$1
  shift
  if ! gcloud_ secrets describe "$name" >/dev/null 2>&1; then
    "$@" | gcloud_ secrets create "$name" --replication-policy automatic --data-file -
  fi
  gcloud_ secrets add-iam-policy-binding "$name" --member "$member" \
    --role roles/secretmanager.secretAccessor >/dev/null
}
database_url() {
  local password
  password=$(random_token)
  gcloud_ sql users create remediator --instance "$SQL_INSTANCE" --password "$password" >/dev/null
  printf 'postgresql://remediator:%s@/remediator?host=/cloudsql/%s' "$password" "$connection"
}
say "secrets in Secret Manager"
secret remediator-database-url database_url
secret remediator-webhook-token random_token
secret remediator-api-token random_token

if [ -n "$MANAGED_SERVICES" ]; then
  IFS=',' read -r -a services <<<"$MANAGED_SERVICES"
  for service in "${services[@]}"; do
    runtime=$(gcloud_ run services describe "$service" --region "$REGION" \
      --format 'value(spec.template.spec.serviceAccountName)')
    if [ -z "$runtime" ]; then # the Compute Engine default service account
      number=$(gcloud_ projects describe "$PROJECT_ID" --format 'value(projectNumber)')
      runtime="${number}-compute@developer.gserviceaccount.com"
    fi
    say "actAs on ${runtime}, the identity of ${service} (Cloud Run checks it on every update)"
    gcloud_ iam service-accounts add-iam-policy-binding "$runtime" --member "$member" \
      --role roles/iam.serviceAccountUser >/dev/null
  done
fi

say "schema: the remediator-migrate job runs 'remediator db upgrade' once"
gcloud_ run jobs deploy remediator-migrate --image "$IMAGE" --region "$REGION" \
  --service-account "$account" --set-cloudsql-instances "$connection" \
  --set-secrets DATABASE_URL=remediator-database-url:latest \
  --command remediator --args db,upgrade --max-retries 1
gcloud_ run jobs execute remediator-migrate --region "$REGION" --wait

say "service remediator (service.yaml)"
sed -e "s|\${PROJECT_ID}|${PROJECT_ID}|g" \
  -e "s|\${REGION}|${REGION}|g" \
  -e "s|\${SQL_INSTANCE}|${SQL_INSTANCE}|g" \
  -e "s|\${SERVICE_ACCOUNT}|${account}|g" \
  -e "s|\${IMAGE}|${IMAGE}|g" \
  "$here/service.yaml" >"$work/service.yaml"
gcloud_ run services replace "$work/service.yaml" --region "$REGION"

say "Cloud Monitoring alerting policies (monitoring/policies/)"
for policy in "$here"/monitoring/policies/*.json; do
  name=$(sed -n 's/^ *"displayName": "\(Remediator: [^"]*\)".*/\1/p' "$policy" | head -n 1)
  existing=$(gcloud_ monitoring policies list --filter "displayName=\"${name}\"" --format 'value(name)')
  if [ -z "$existing" ]; then
    gcloud_ monitoring policies create --policy-from-file "$policy"
  fi
done

url=$(gcloud_ run services describe remediator --region "$REGION" --format 'value(status.url)')
say "done: Remediator at ${url}"
cat >&2 <<EOF
Next: point an Alertmanager at ${url}/api/v1/alerts with the bearer token in the secret
remediator-webhook-token, and load prometheus/cloud-run/rules/alerts.yml (or
deploy/cloud-run/monitoring/global-rules.yaml) into Managed Prometheus' rule evaluator.
See docs/deploy-cloud-run.md.
EOF
