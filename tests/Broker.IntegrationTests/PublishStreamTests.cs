using Broker.IntegrationTests.Infrastructure;
using Broker.Protocol.V1;
using Google.Protobuf;
using Grpc.Core;

namespace Broker.IntegrationTests;

public sealed class PublishStreamTests(SharedBroker shared) : IClassFixture<SharedBroker>
{
    [Fact]
    public async Task Pipelined_batches_are_confirmed_in_order_and_a_bad_batch_fails_alone()
    {
        string topic = await shared.NewTopicAsync();
        var publisher = new Publisher.PublisherClient(shared.Client.Channel);
        using var call = publisher.PublishStream();

        // Send everything first, then read: the broker must pipeline, not wait for each confirmation.
        for (ulong id = 1; id <= 50; id++)
        {
            var request = new PublishRequest { Topic = id == 25 ? "no-such-topic" : topic, RequestId = id };
            for (int i = 0; i < 3; i++)
                request.Messages.Add(new Message { Payload = ByteString.CopyFromUtf8($"{id}-{i}") });
            await call.RequestStream.WriteAsync(request);
        }
        await call.RequestStream.CompleteAsync();
        var responses = new List<PublishResponse>();
        while (await call.ResponseStream.MoveNext(CancellationToken.None))
            responses.Add(call.ResponseStream.Current);

        Assert.Equal(Enumerable.Range(1, 50).Select(i => (ulong)i), responses.Select(r => r.RequestId));
        var failed = responses.Single(r => r.Error is not null);
        Assert.Equal(25UL, failed.RequestId);
        Assert.Equal((int)StatusCode.NotFound, failed.Error.StatusCode);
        Assert.Equal(1001, failed.Error.ErrorCode);
        var succeeded = responses.Where(r => r.Error is null).ToList();
        Assert.Equal(Enumerable.Range(0, 49).Select(i => (ulong)(3 * i)), succeeded.Select(r => r.FirstOffset));
        Assert.All(succeeded, r => Assert.Equal(3U, r.Count));
        Assert.Equal(147UL, (await shared.Client.DescribeTopicAsync(topic)).NextOffset);
    }
}
