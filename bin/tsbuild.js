#!/bin/sh
':' //; if [ -n "${NODE_EXTRA_CA_CERTS:-}" ]; then export TSIMAGE_DEFERRED_CA_CERTS="$NODE_EXTRA_CA_CERTS"; unset NODE_EXTRA_CA_CERTS; else unset TSIMAGE_DEFERRED_CA_CERTS; fi; exec node "$0" "$@"
// (line 2: /bin/sh runs it and starts node without NODE_EXTRA_CA_CERTS, see bin/deferred-ca.js; to JavaScript it is a string and a comment)
// Thin launcher: the command's logic lives in dist/src/cli (built by `npm install` via prepare).
require('./deferred-ca.js');
import('../dist/src/cli/tsbuild.js').then((m) => m.run());
