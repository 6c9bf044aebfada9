// A viem bot, unchanged: send through the broadcaster, wait for the receipt by the hash it was
// given. Usage: node viem_bot.cjs http|ws URL FROM TO
// (URL carries the token as its path: http://127.0.0.1:8650/TOKEN or ws://127.0.0.1:8650/TOKEN)
// Prints {"hash"} once sent, waits for a line on stdin (the test reorgs the chain meanwhile),
// then prints the receipt that waitForTransactionReceipt({ hash }) ends with.
const { createPublicClient, createWalletClient, http, webSocket } = require("viem");
const { foundry } = require("viem/chains");
const readline = require("node:readline");

async function main() {
  const [kind, url, from, to] = process.argv.slice(2);
  const transport = kind === "ws" ? webSocket(url) : http(url);
  const wallet = createWalletClient({ chain: foundry, transport });
  const client = createPublicClient({ chain: foundry, transport, pollingInterval: 250 });

  const hash = await wallet.sendTransaction({ account: from, to, value: 12345n });
  console.log(JSON.stringify({ hash }));

  await new Promise((resolve) => readline.createInterface({ input: process.stdin }).once("line", resolve));
  const receipt = await client.waitForTransactionReceipt({ hash, timeout: 60_000 });
  console.log(JSON.stringify({
    transactionHash: receipt.transactionHash, status: receipt.status, blockHash: receipt.blockHash,
    to: receipt.to, from: receipt.from,
  }));
}

main().then(() => process.exit(0), (error) => { console.error(error); process.exit(1); });
