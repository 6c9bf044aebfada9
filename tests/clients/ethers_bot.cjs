// An ethers v6 bot, unchanged: send through the broadcaster, wait for the receipt by the hash it
// was given. Usage: node ethers_bot.cjs http|ws URL FROM TO
// (URL carries the token as its path: http://127.0.0.1:8650/TOKEN or ws://127.0.0.1:8650/TOKEN)
// Prints {"hash"} once sent, waits for a line on stdin (the test reorgs the chain meanwhile),
// then prints the receipt that provider.waitForTransaction(hash) ends with.
const { ethers } = require("ethers");
const readline = require("node:readline");

async function main() {
  const [kind, url, from, to] = process.argv.slice(2);
  const provider = kind === "ws"
    ? new ethers.WebSocketProvider(url)
    : new ethers.JsonRpcProvider(url, undefined, { pollingInterval: 250 });

  const hash = await provider.send("eth_sendTransaction", [{ from, to, value: "0x3039" }]);
  console.log(JSON.stringify({ hash }));

  await new Promise((resolve) => readline.createInterface({ input: process.stdin }).once("line", resolve));
  const receipt = await provider.waitForTransaction(hash, 1, 60_000);
  console.log(JSON.stringify({
    transactionHash: receipt.hash, status: receipt.status, blockHash: receipt.blockHash,
    to: receipt.to, from: receipt.from,
  }));
  await provider.destroy();
}

main().then(() => process.exit(0), (error) => { console.error(error); process.exit(1); });
