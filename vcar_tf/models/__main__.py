from vcar_tf.models import main

main()
