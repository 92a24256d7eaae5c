using Broker.Client;
using Broker.IntegrationTests.Infrastructure;

namespace Broker.IntegrationTests;

/// <summary>
/// The message log is truncated only below floors a crash cannot take back. Deterministic: the group-state folder
/// is a tmpfs of its own, filled up before the acks, so the acks change the group's floor in memory but never reach
/// the disk, while the message log (on the ordinary disk) keeps committing. Invariant: maintenance then frees
/// nothing, and after a restart every message is still stored and delivered again.
/// </summary>
public sealed class DurableFloorTests
{
    private const string Topic = "floors";
    private const int Messages = 3_000;   // about three 1 MiB segments

    [Fact]
    public async Task Acks_that_never_became_durable_do_not_let_the_log_be_truncated()
    {
        string data = TestBroker.NewDataDirectory();
        void Configure(Server.Hosting.BrokerOptions options)
        {
            options.TopicSegmentSizeBits = 20;
            options.MaintenanceIntervalMs = 3_600_000;   // maintenance runs when the test says so
        }
        try
        {
            // 1. The topic exists; its group-state folder gets a tmpfs of its own.
            await using (var broker = await TestBroker.StartOnAsync(data, Configure))
                await broker.Client.CreateTopicAsync(Topic);
            using var groupState = await TmpfsMount.MountAtAsync(Path.Combine(data, "topics", Topic, "groups"), sizeMegabytes: 4);

            // 2. Deliver three segments' worth, fill the group-state disk, ack everything: the acks fail, and
            //    maintenance, which could free two segments by the floor in memory, must free none.
            await using (var broker = await TestBroker.StartOnAsync(data, Configure))
            {
                await using var subscription = await broker.Client.SubscribeAsync(Topic, "workers", new SubscribeOptions { MaxInFlight = Messages });
                for (int i = 0; i < Messages; i += 100)
                    await broker.Client.PublishAsync(Topic, Enumerable.Range(i, 100).Select(Message));
                var received = await Receive.ExactlyAsync(subscription, Messages);
                groupState.Fill();

                var failure = await Assert.ThrowsAsync<BrokerClientException>(() => subscription.AckAsync(received, CancellationToken.None));
                Assert.Equal(1202, failure.ErrorCode);
                await broker.Host.Store.MaintainAllAsync(CancellationToken.None);
                // Publishing on the message log commits whatever truncation maintenance asked for.
                await broker.Client.PublishAsync(Topic, [Message(Messages)]);
                Assert.Equal(0ul, (await broker.Client.DescribeTopicAsync(Topic)).FirstOffset);
            }

            // 3. Room again and a restart: nothing was lost, everything comes again.
            File.Delete(Path.Combine(groupState.Path, "filler"));
            await using (var broker = await TestBroker.StartOnAsync(data, Configure))
            {
                var description = await broker.Client.DescribeTopicAsync(Topic);
                Assert.Equal(0ul, description.FirstOffset);
                Assert.Equal(0ul, description.Groups.Single().AckFloor);
                await using var subscription = await broker.Client.SubscribeAsync(Topic, "workers", new SubscribeOptions { MaxInFlight = 10_000 });
                var again = await Receive.ExactlyAsync(subscription, Messages + 1);
                Assert.Equal(Enumerable.Range(0, Messages + 1).Select(i => (long)i), again.Select(m => m.Offset).Order());
                Assert.All(again, m => Assert.Equal(Message((int)m.Offset).Payload.ToArray(), m.Payload.ToArray()));
            }
        }
        finally
        {
            try
            {
                Directory.Delete(data, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }

    private static OutgoingMessage Message(int index) => new(Enumerable.Range(0, 1024).Select(b => (byte)(b * 31 + index)).ToArray());
}
