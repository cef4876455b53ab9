// Independent DKIM verifier for the tests (mailauth), DNS answered from the arguments.
// Usage: node dkim_verify.mjs NAME=TXT... < message   Prints one line per signature, then result=.
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';

const records = {};
for (const arg of process.argv.slice(2)) {
    const i = arg.indexOf('=');
    records[arg.slice(0, i).toLowerCase()] = arg.slice(i + 1);
}
const resolver = async (name, rrtype) => {
    const value = records[name.toLowerCase()];
    if (rrtype !== 'TXT' || value === undefined) {
        const err = new Error('not found');
        err.code = 'ENOTFOUND';
        throw err;
    }
    return [value.match(/.{1,255}/gs)];
};
const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const result = await dkimVerify(Buffer.concat(chunks), { resolver });
let all = result.results.length > 0;
for (const r of result.results) {
    console.log(`${r.signingDomain} ${r.selector} ${r.algo} ${r.status.result}`);
    all = all && r.status.result === 'pass';
}
console.log(`result=${all ? 'pass' : 'fail'}`);
