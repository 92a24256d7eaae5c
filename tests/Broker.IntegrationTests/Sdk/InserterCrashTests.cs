using Broker.Client;
using Broker.IntegrationTests.Infrastructure;
using Microsoft.Data.Sqlite;
using Xunit.Abstractions;

namespace Broker.IntegrationTests.Sdk;

/// <summary>
/// The example inserter (examples/EstelaInserter) SIGKILLed right after a chunk's commit, before or while it acks, then
/// started again. Invariant: the table ends with every published item exactly once, and the group has nothing left.
/// </summary>
public sealed class InserterCrashTests(ITestOutputHelper output)
{
    private const int Items = 3_000;
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(120);

    [Fact]
    public async Task The_inserter_killed_mid_chunk_and_restarted_leaves_every_item_in_the_table_exactly_once()
    {
        await using var broker = await TestBroker.StartAsync();
        await broker.Client.CreateTopicAsync("job_items");
        string database = Path.Combine(broker.DataDirectory, "items.db");
        var environment = new Dictionary<string, string>
        {
            ["QUEUE_PLATFORM_LISTENERS"] = broker.Host.Address.ToString(),
            ["QUEUE_PLATFORM_TOPIC"] = "job_items",
            ["INSERTER_DATABASE"] = database,
            ["INSERTER_CHUNK_SIZE"] = "100",
        };

        // 1. A spider's items, each with its own number.
        await using (var producer = new BrokerProducer(SdkTesting.Settings(broker.Host.Address), null, null))
        {
            for (int n = 0; n < Items; n++)
                await producer.SendAsync("job_items", new { jid = "1.2.3", payload = new { n } });
            await producer.FlushAsync();
        }

        // 2. The inserter, killed as soon as it says its third chunk committed; told to stall before acking that chunk, so
        //    the kill falls between the commit and the ack.
        using (var inserter = ExampleProcess.Start("EstelaInserter", new Dictionary<string, string>(environment) { ["INSERTER_STALL_AFTER_CHUNK"] = "3" }))
        {
            await inserter.WaitForLineAsync("committed chunk 3:", Deadline);
            inserter.Kill();
            output.WriteLine("first run:\n" + string.Join('\n', inserter.Lines));
        }

        // 3. Started again, it gets the unacknowledged third chunk back first (inserting it changes nothing) and finishes
        //    the topic; then stops on SIGTERM.
        using (var inserter = ExampleProcess.Start("EstelaInserter", environment))
        {
            await inserter.WaitForLineAsync($" {Items} rows", Deadline);
            Assert.Contains("committed chunk 1: 100 message(s), 0 new, 300 rows", inserter.Lines);
            Assert.Equal(0, await inserter.TerminateAsync(Deadline));
            output.WriteLine("second run:\n" + string.Join('\n', inserter.Lines));
        }

        // 4. Every item exactly once, and nothing left unacknowledged.
        await using (var connection = new SqliteConnection($"Data Source={database};Pooling=False"))
        {
            await connection.OpenAsync();
            await using var query = connection.CreateCommand();
            query.CommandText = "SELECT COUNT(*), COUNT(DISTINCT json_extract(payload, '$.n')), MIN(json_extract(payload, '$.n')), MAX(json_extract(payload, '$.n')) FROM items";
            await using var row = await query.ExecuteReaderAsync();
            Assert.True(await row.ReadAsync());
            Assert.Equal((Items, Items, 0L, Items - 1L), (row.GetInt64(0), row.GetInt64(1), row.GetInt64(2), row.GetInt64(3)));
        }
        var group = (await broker.Client.DescribeTopicAsync("job_items")).Groups.Single();
        Assert.Equal((0UL, 0UL), (group.Backlog, group.InFlight));
    }
}
