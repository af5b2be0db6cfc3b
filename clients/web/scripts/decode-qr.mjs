// Reads {width, height, data: [r, g, b, a, ...]} (JSON) on stdin and prints the text of the QR
// code in it: the page tests read back what the wallet page draws (tests/web).
import decodeQR from "qr/decode.js";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const { width, height, data } = JSON.parse(input);
process.stdout.write(decodeQR({ width, height, data: Uint8ClampedArray.from(data) }));
