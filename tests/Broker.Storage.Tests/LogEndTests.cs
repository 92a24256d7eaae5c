using Broker.Storage.Groups;
using Broker.Storage.Topics;

namespace Broker.Storage.Tests;

/// <summary>
/// The message log recovers to an earlier end than its groups have seen (what FASTER's recovery does when damage lies
/// within the log's last commits; made for real here by putting the message log back to an older copy). Invariant:
/// the loss is reported with its range, no offset is handed out twice (the groups' acks for the lost offsets must
/// not swallow new messages), a group whose floor lay past the end reads on from it, a group behind it gets
/// everything still stored, and a second restart is clean.
/// </summary>
public sealed class LogEndTests : IDisposable
{
    private readonly TempDirectory _data = new();

    public void Dispose() => _data.Dispose();

    [Fact]
    public async Task A_log_that_recovers_short_of_its_groups_never_reuses_their_offsets()
    {
        var options = new StorageOptions { DataDirectory = _data.Path, MaintenanceInterval = TimeSpan.FromDays(1) };
        string log = Path.Combine(_data.Path, "topics", "jobs", "log");
        string olderLog = Path.Combine(_data.Path, "older-log");
        var logs = new LogLines();

        // 1. 100 messages and two groups; the message log as of then is kept aside.
        await using (var store = TopicStore.Open(options))
        {
            await store.CreateTopicAsync("jobs", false, default);
            var topic = await store.GetTopicAsync("jobs");
            await topic.AppendAsync(FloorRepairTests.Payloads(0, 100));
            foreach (string group in new[] { "g", "h", "k", "p" })
                await topic.GetOrCreateGroupAsync(group, GroupStart.Earliest, null, default);
        }
        FloorRepairTests.CopyFolder(log, olderLog);

        // 2. 100 more, all 200 acknowledged by g and p; k acknowledges all but 100-149.
        await using (var store = TopicStore.Open(options))
        {
            var topic = await store.GetTopicAsync("jobs");
            await topic.AppendAsync(FloorRepairTests.Payloads(100, 100));
            await FloorRepairTests.AckEverythingAsync(topic.FindGroup("g")!, 200);
            await FloorRepairTests.AckEverythingAsync(topic.FindGroup("p")!, 200);
            var k = topic.FindGroup("k")!;
            var member = k.Join(200);
            var delivered = new List<GroupDelivery>();
            while (delivered.Count < 200)
                delivered.AddRange(await k.FetchAvailableAsync(member, 200 - delivered.Count, default));
            await k.SettleAsync(new SettleAction.Ack(), [.. delivered.Where(d => d.Offset is < 100 or >= 150).Select(d => new DeliveryRef(d.Offset, d.Token))]);
        }

        // 3. The message log goes back to 100 messages: reported, and the next message is 200, delivered to both.
        Directory.Delete(log, recursive: true);
        FloorRepairTests.CopyFolder(olderLog, log);
        await using (var store = TopicStore.Open(options, loggerFactory: logs))
        {
            var topic = await store.GetTopicAsync("jobs");
            var loss = Assert.Single(logs.Lines, line => line.EventId == 3005);
            Assert.Contains("recovered to offset 100", loss.Message);
            Assert.Contains("up to 200", loss.Message);
            Assert.Equal(200, topic.NextOffset);
            Assert.Equal(200, (await topic.AppendAsync(FloorRepairTests.Payloads(200, 1))).FirstOffset);

            var g = await FloorRepairTests.AckEverythingAsync(topic.FindGroup("g")!, 1);
            Assert.Equal(200, Assert.Single(g).Offset);
            var h = await FloorRepairTests.AckEverythingAsync(topic.FindGroup("h")!, 101);
            Assert.Equal(Enumerable.Range(0, 100).Append(200).Select(i => (long)i), h.Select(d => d.Offset));
            Assert.All(h, d => Assert.Equal((byte)d.Offset, d.Message.Payload.Span[0]));
            Assert.Equal(201, topic.FindGroup("h")!.Floor().Floor);

            // k's acks of 150-199 lie in the lost range: its floor still moves past them, not stuck at 150.
            Assert.Equal(200, Assert.Single(await FloorRepairTests.AckEverythingAsync(topic.FindGroup("k")!, 1)).Offset);
            Assert.Equal(201, topic.FindGroup("k")!.Floor().Floor);

            // More messages while p, whose floor lay past the end, reads nothing: its moved floor must be on disk.
            await topic.AppendAsync(FloorRepairTests.Payloads(201, 150));
        }

        // 4. A second restart reports nothing and keeps counting from there.
        logs.Clear();
        await using (var store = TopicStore.Open(options, loggerFactory: logs))
        {
            var topic = await store.GetTopicAsync("jobs");
            Assert.DoesNotContain(logs.Lines, line => line.EventId == 3005);
            Assert.Equal(351, topic.NextOffset);
            Assert.Equal(201, topic.FindGroup("g")!.Floor().Floor);
            var p = await FloorRepairTests.AckEverythingAsync(topic.FindGroup("p")!, 151);
            Assert.Equal(Enumerable.Range(200, 151).Select(i => (long)i), p.Select(d => d.Offset));
        }
    }
}
