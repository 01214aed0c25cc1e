// The node half of the launchers' first line (bin/tscopy.js, bin/tsbuild.js). Node 20 parses the file named by
// NODE_EXTRA_CA_CERTS, and its own bundled roots, at the start of every process that has the variable (36 ms of
// a 56 ms `node -e 0` on a machine where it names the system bundle), so the /bin/sh line moves it to
// TSIMAGE_DEFERRED_CA_CERTS before node starts, and src/copy/registry/trust.ts adds those certificates when a
// connection verifies a certificate. Here: child processes get NODE_EXTRA_CA_CERTS back; started some other way
// (`node bin/tscopy.js`), Node has loaded the file itself and nothing is deferred.
'use strict';
const env = process.env;
if (env.NODE_EXTRA_CA_CERTS) delete env.TSIMAGE_DEFERRED_CA_CERTS;
else if (env.TSIMAGE_DEFERRED_CA_CERTS) env.NODE_EXTRA_CA_CERTS = env.TSIMAGE_DEFERRED_CA_CERTS;
