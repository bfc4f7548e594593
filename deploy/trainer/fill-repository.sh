#!/bin/sh
# One-shot trainer: trains the default models into the repository when it holds none of its own.
#   empty, or only some of the defaults (an interrupted first run): `cnnserve train defaults` adds the missing ones
#   anything else in it (your own models): left alone, exit 0
# Extra arguments go to `cnnserve train defaults` (for example --dry-run).
set -eu
repo="${CNNSERVE_MODEL_REPOSITORY:-/models}"
mkdir -p "$repo"
for entry in "$repo"/*; do
  [ -e "$entry" ] || continue                     # empty folder: the glob stayed literal
  case "$(basename "$entry")" in
    digits_cnn|digits_cnn_int8|dcgan_digits|cdcgan_digits|digits_segmenter|stylize_brushstrokes) ;;
    *) echo "trainer: $repo holds other models ($(basename "$entry"), ...): left as it is"; exit 0 ;;
  esac
done
echo "trainer: training the default models missing from $repo"
exec cnnserve train defaults --model-repository "$repo" "$@"
