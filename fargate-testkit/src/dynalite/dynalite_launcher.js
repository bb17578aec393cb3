// Starts dynalite (in memory) on 127.0.0.1 only, on a port the system picks, and writes
// that port to a file once it listens. dynalite's own command line (`cli.js`) has no
// option for the address and listens on every interface, so the fixture runs this
// instead.
//
// Usage: node dynalite_launcher.js <dynalite package dir> <port file> <createTableMs>
'use strict'
const fs = require('fs')
const [dir, portFile, createTableMs] = process.argv.slice(2)
const dynalite = require(dir)
const server = dynalite({ createTableMs: Number(createTableMs) })
server.listen(0, '127.0.0.1', () => {
  const { address, port } = server.address()
  console.log('dynalite listening at http://%s:%s', address, port)
  fs.writeFileSync(portFile + '.tmp', String(port))
  fs.renameSync(portFile + '.tmp', portFile)
})
// The fixture kills this process when dropped; a parent that dies closes stdin.
process.stdin.on('end', () => process.exit(0))
process.stdin.resume()
