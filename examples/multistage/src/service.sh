#!/bin/sh
# a tiny "service": prints its version and config, answers --self-test
VERSION=@VERSION@
case "$1" in
  --self-test) echo "self-test ok (v$VERSION)"; exit 0 ;;
  --greet) echo "service v$VERSION: hello, $2"; busybox cat /etc/service.conf ;;
  *) echo "usage: service --greet NAME | --self-test" >&2; exit 2 ;;
esac
