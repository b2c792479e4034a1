#!/usr/bin/env bash
# Regenerates the Go code of examples/proto/*/*.proto. The generated files
# are committed, so building needs none of this; run it after changing a
# .proto file. It installs protoc (Debian's protobuf-compiler, as root) if
# missing, and the two Go plugins, at pinned versions, into ./.bin.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v protoc >/dev/null; then
  apt-get install -y protobuf-compiler
fi
export GOBIN="$PWD/.bin"
go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.11
go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
export PATH="$GOBIN:$PATH"
for f in examples/proto/*/*.proto; do
  protoc -I examples/proto --go_out=examples/proto --go_opt=paths=source_relative \
    --go-grpc_out=examples/proto --go-grpc_opt=paths=source_relative "$f"
done
