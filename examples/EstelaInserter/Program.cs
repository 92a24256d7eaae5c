// estela's consumer service on the .NET SDK: reads a job-items topic in chunks and inserts them into SQLite, acking a
// chunk only after its transaction committed. Idempotent by topic + offset (ItemStore), so a crash between the commit
// and the ack duplicates nothing. A database error nacks the chunk with a delay: after the group's max deliveries (5)
// its messages land in the dead-letter topic "<topic>.dlq".
//
// Configured like estela: QUEUE_PLATFORM_LISTENERS, QUEUE_PLATFORM_TOPIC (default job_items here), QUEUE_PLATFORM_MAX_TIMEOUT;
// INSERTER_DATABASE (default items.db) and INSERTER_CHUNK_SIZE (default 100). Stops on SIGTERM or Ctrl+C.
// INSERTER_STALL_AFTER_CHUNK=N stalls between the commit of chunk N and its ack, until stopped: the window a crash test aims at.
using System.Runtime.InteropServices;
using Broker.Client;
using EstelaInserter;
using Microsoft.Data.Sqlite;

var options = new BrokerClientOptions
{
    Topic = Environment.GetEnvironmentVariable("QUEUE_PLATFORM_TOPIC") is { Length: > 0 } topic ? topic : "job_items",
};
string database = Environment.GetEnvironmentVariable("INSERTER_DATABASE") ?? "items.db";
int chunkSize = int.TryParse(Environment.GetEnvironmentVariable("INSERTER_CHUNK_SIZE"), out int size) ? size : 100;
int stallAfterChunk = int.TryParse(Environment.GetEnvironmentVariable("INSERTER_STALL_AFTER_CHUNK"), out int stall) ? stall : 0;

using var stop = new CancellationTokenSource();
using var onTerm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, signal => { signal.Cancel = true; stop.Cancel(); });
using var onInt = PosixSignalRegistration.Create(PosixSignal.SIGINT, signal => { signal.Cancel = true; stop.Cancel(); });

await using var store = await ItemStore.OpenAsync(database);
await using var consumer = new BrokerConsumer(options);
Console.WriteLine($"inserting {consumer.Topic} (group {consumer.Group}) into {database}, chunks of {chunkSize}");
int chunks = 0;
while (!stop.IsCancellationRequested)
{
    IReadOnlyList<BrokerMessage> chunk;
    try
    {
        chunk = await consumer.ReceiveBatchAsync(chunkSize, TimeSpan.FromSeconds(1), stop.Token);
    }
    catch (OperationCanceledException)
    {
        break;
    }
    if (chunk.Count == 0)
        continue;
    int inserted;
    try
    {
        inserted = await store.InsertAsync(chunk);
    }
    catch (SqliteException error)
    {
        Console.Error.WriteLine($"chunk of {chunk.Count} failed: {error.Message}; back in 5 s");
        await consumer.NackAsync(chunk, TimeSpan.FromSeconds(5), error.Message);
        continue;
    }
    Console.WriteLine($"committed chunk {++chunks}: {chunk.Count} message(s), {inserted} new, {await store.CountAsync()} rows");
    if (chunks == stallAfterChunk)
        await Task.Delay(Timeout.Infinite, stop.Token).ContinueWith(_ => { }, TaskScheduler.Default);
    try
    {
        await consumer.AckAsync(chunk);
    }
    catch (SettleNotConfirmedException error)
    {
        // The broker restarted before it answered: the chunk may come again, and inserting it again changes nothing.
        Console.Error.WriteLine(error.Message);
    }
}
Console.WriteLine("stopped");
